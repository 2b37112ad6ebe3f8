"""Preparing a dataset: read every image, cut out its face, write 64x64 shards.

`prepare("imdb", source, output)` turns a raw dataset into training data that
never has to fit in memory. Records are cut into shards of `shard_size`
images, and worker processes prepare whole shards in parallel. Each shard is
written through a temporary file, so an interrupted run resumes with the
shards that are not finished. The output folder holds:

- `shard-00000.npz`, ...: `images` (uint8, `(n, 64, 64, 3)`, RGB), `ages`,
  `genders` (0 female, 1 male, -1 unknown), `identities` and `paths`;
- `shard-00000.json`, ...: that shard's counts and the SHA-256 of the source
  images it read, written after the `.npz` file, so it marks a finished shard;
- `manifest.json`: written last, with the settings, the counts of kept and
  skipped records and why, and the list of shards.

Three ways to turn a photo into a face crop (`method`):

- `"resize"`: the image is already an aligned face (UTKFace, MegaAge-Asian);
- `"align"`: landmarks from the dataset or a detector, then `faces.align_face`;
- `"margin"`: the dataset's face box or a detector's box, widened by 40% on
  every side (`faces.crop_with_margin`), as in the authors' demo.

Raw files are only read, never changed. Introduced in notebook 02,
*Preparing the data*.
"""

import hashlib
import json
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ssr_lib import faces
from ssr_lib.data import SkipReport
from ssr_lib.datasets import READERS

METHODS = ("resize", "align", "margin")
# Datasets whose images are already aligned face crops.
DEFAULT_METHODS = {"utkface": "resize", "megaage-asian": "resize"}
GRAYSCALE = "grayscale image, converted to RGB"


@dataclass(frozen=True)
class Settings:
    """Settings a prepared folder was made with; a resumed run must use the same.

    `source` is the resolved source folder, and `records` a digest of the
    record paths, so a changed folder or `limit` is not mixed with old shards.
    """

    dataset: str
    method: str
    detector: str
    image_size: int = 64
    shard_size: int = 1000
    source: str = ""
    records: str = ""


def decode_image(data):
    """Decode image bytes to RGB uint8.

    A JPEG stream without its end-of-image marker is reported as truncated,
    a clearer reason than "unreadable" (OpenCV 4.14 returns no image for it).

    Returns:
        `(image, problem)`: `image` is `None` when the file cannot be used,
        and `problem` then gives the reason. For a grayscale file that was
        converted, `problem` is `GRAYSCALE` and `image` is set.
    """
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        return None, "truncated JPEG (no end-of-image marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None, "unreadable image (OpenCV could not decode it)"
    if image.dtype != np.uint8:
        image = (image / (np.iinfo(image.dtype).max / 255)).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), GRAYSCALE
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None


def pick_face(found, face_box=None):
    """Choose one detected face: the one overlapping `face_box` most, else the widest."""
    if face_box is not None:
        return max(found, key=lambda face: faces.box_overlap(face.box, face_box))
    return max(found, key=lambda face: face.width)


def cut_face(image, record, settings, detector=None):
    """Turn one decoded photo into a face crop, following `settings.method`.

    Returns:
        `(crop, problem)`: `crop` is `None` when no face was found, and
        `problem` then gives the reason.
    """
    size = settings.image_size
    if settings.method == "resize":
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), None
    if settings.method == "align" and record.landmarks is not None:
        return faces.align_face(image, faces.eye_centres(record.landmarks), size), None
    if settings.method == "margin" and record.face_box is not None:
        return faces.crop_with_margin(image, record.face_box, size), None
    found = detector(image)
    if not found:
        return None, f"no face found by the {settings.detector} detector"
    face = pick_face(found, record.face_box)
    if settings.method == "align":
        return faces.align_face(image, face.points, size), None
    return faces.crop_with_margin(image, face.box, size), None


_detector = None


def _worker_detector(settings):
    """Return this process's detector, built on first use so that `resize` never loads one."""
    global _detector
    if _detector is None or _detector.name != settings.detector:
        _detector = faces.Detector(settings.detector)
    return _detector


def shard_name(index):
    return f"shard-{index:05d}"


def _write_atomically(path, write):
    """Write through a `.partial` file renamed at the end, so `path` is complete or absent."""
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    write(partial)
    os.replace(partial, path)


def prepare_shard(index, records, source, output, settings):
    """Prepare one shard, write its `.npz` and then its `.json` file, and return the summary."""
    cv2.setNumThreads(1)
    source, output = Path(source), Path(output)
    report = SkipReport(settings.dataset)
    converted = 0
    digest = hashlib.sha256()

    def detector(image):
        return _worker_detector(settings)(image)

    crops, kept_records = [], []
    for record in records:
        try:
            content = (source / record.path).read_bytes()
        except OSError:
            report.skip("missing or unreadable file", record.path)
            continue
        digest.update(record.path.encode() + content)
        image, problem = decode_image(content)
        converted += problem == GRAYSCALE
        if image is not None:
            image, problem = cut_face(image, record, settings, detector)
        if image is None:
            report.skip(problem, record.path)
            continue
        crops.append(image)
        kept_records.append(record)

    size = settings.image_size
    arrays = {
        "images": np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        "ages": np.array([r.age for r in kept_records], np.int16),
        "genders": np.array([r.gender for r in kept_records], np.int8),
        "identities": np.array([r.identity for r in kept_records], dtype=str),
        "paths": np.array([r.path for r in kept_records], dtype=str),
    }
    _write_atomically(output / f"{shard_name(index)}.npz", lambda path: np.savez(path, **arrays))
    summary = {
        "shard": f"{shard_name(index)}.npz", "kept": len(kept_records), "skipped": dict(report.skipped),
        "examples": report.examples, "grayscale_converted": converted, "source_sha256": digest.hexdigest(),
    }
    _write_atomically(output / f"{shard_name(index)}.json", lambda path: path.write_text(json.dumps(summary)))
    return summary


def _ignore_interrupts():
    """Leave Ctrl-C to the main process, which stops the workers and keeps finished shards."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _prepare_shard_args(args):
    return prepare_shard(*args)


def _check_settings(output, settings):
    """Raise `ValueError` rather than mix shards made with other settings into `output`."""
    path = output / "settings.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        wanted = asdict(settings)
        changed = [f"{key} was {stored.get(key)!r}, now {value!r}"
                   for key, value in wanted.items() if stored.get(key) != value]
        if changed:
            raise ValueError(
                f"{output} contains shards prepared with other settings ({path}): {'; '.join(changed)}. "
                "Run with the earlier settings to resume, choose another --output folder, "
                "or delete this one to start again."
            )
    else:
        path.write_text(json.dumps(asdict(settings), indent=1))


def _records_digest(records):
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.path.encode() + b"\0")
    return digest.hexdigest()[:16]


def spread_sample(records, limit):
    """Return `limit` records spread evenly over the list, so a sample covers every age of a sorted list."""
    if not limit or limit >= len(records):
        return records
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]


def _check_arguments(source, output, workers, shard_size, limit):
    if not source.is_dir():
        problem = "is a file, not a folder" if source.exists() else "does not exist"
        raise FileNotFoundError(f"Source {source} {problem}. Give the folder the dataset was unpacked into.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"Output {output} is a file. Give a folder (it is created if missing).")
    for name, value in (("workers", workers), ("shard_size", shard_size), ("limit", limit)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1. Received: {value}")


def prepare(dataset, source, output, method=None, detector="dlib", workers=None,
            shard_size=1000, image_size=64, limit=None, verbose=True):
    """Prepare `dataset` from its `source` folder into shards in `output`.

    Args:
        dataset: a name in `datasets.READERS`, such as `"utkface"` or `"imdb"`.
        source: the folder the dataset was unpacked into.
        output: the folder for shards and `manifest.json`; finished shards
            there are kept and the rest are prepared.
        method: `"resize"`, `"align"` or `"margin"`. Defaults to `"resize"`
            for datasets of aligned faces and `"align"` for the others.
        detector: `"dlib"`, `"mtcnn"` or `"haar"` (see `faces.Detector`).
        workers: processes to use. Defaults to the number of CPU cores; with
            `1`, everything runs in this process.
        shard_size: records per shard. Defaults to `1000`.
        image_size: side of the square crops. Defaults to `64`.
        limit: prepare `limit` records spread evenly over the dataset, for a
            quick look.
        verbose: print progress and the final report.

    Returns:
        `(manifest, report)`: the manifest as a dict and a `SkipReport` with
        the reader's and the preparation's skips together.

    Raises:
        FileNotFoundError: if `source` is not a folder.
        ValueError: for invalid arguments, an `output` folder prepared with
            other settings, or a dataset from which no face was prepared.
    """
    if dataset not in READERS:
        raise ValueError(f"Unknown dataset {dataset!r}. Choose one of: {', '.join(READERS)}")
    method = method or DEFAULT_METHODS.get(dataset, "align")
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}")
    source, output = Path(source), Path(output)
    _check_arguments(source, output, workers, shard_size, limit)
    start = time.perf_counter()
    records, report = READERS[dataset](source)
    records = spread_sample(records, limit)
    if not records:
        raise ValueError(f"No usable record in {source}.\n{report}")
    settings = Settings(dataset, method, detector, image_size, shard_size,
                        str(source.resolve()), _records_digest(records))
    output.mkdir(parents=True, exist_ok=True)
    _check_settings(output, settings)

    tasks = [(i, records[at:at + shard_size], source, output, settings)
             for i, at in enumerate(range(0, len(records), shard_size))
             if not (output / f"{shard_name(i)}.json").is_file()]
    n_shards = -(-len(records) // shard_size)
    if verbose and len(tasks) < n_shards:
        print(f"Resuming: {n_shards - len(tasks)} of {n_shards} shards are already in {output}")
    workers = workers or os.cpu_count()
    if workers == 1:
        results = map(_prepare_shard_args, tasks)
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_interrupts)
        results = pool.imap_unordered(_prepare_shard_args, tasks)
    try:
        for done, summary in enumerate(results, start=1):
            if verbose:
                print(f"{summary['shard']}: {summary['kept']:,} faces ({done}/{len(tasks)} this run)")
    finally:
        if workers != 1:
            pool.terminate()
    manifest = _write_manifest(output, settings, source, report, n_shards, time.perf_counter() - start)
    report.kept = manifest["kept"]
    for reason, count in manifest["skipped_images"].items():
        report.skipped[reason] += count
        report.examples.setdefault(reason, manifest["examples"][reason])
    if verbose:
        print(report)
        if limit:
            print(f"  (--limit {limit}: the reader's skips count every file, the image skips only the sample)")
        if manifest["grayscale_converted"]:
            print(f"  ({manifest['grayscale_converted']:,} grayscale image(s) converted to RGB and kept)")
    if manifest["kept"] == 0:
        raise ValueError(f"No face could be prepared from {source}: every record was skipped.\n{report}")
    return manifest, report


def _write_manifest(output, settings, source, report, n_shards, seconds):
    summaries = [json.loads((output / f"{shard_name(i)}.json").read_text()) for i in range(n_shards)]
    skipped, examples = {}, {}
    for summary in summaries:
        for reason, count in summary["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
            examples.setdefault(reason, summary["examples"][reason])
    manifest = {
        "settings": asdict(settings),
        "source": str(source.resolve()),
        "kept": sum(s["kept"] for s in summaries),
        "skipped_records": dict(report.skipped),
        "skipped_images": skipped,
        "examples": {**report.examples, **examples},
        "grayscale_converted": sum(s["grayscale_converted"] for s in summaries),
        "seconds_last_run": round(seconds, 1),
        "shards": [{k: s[k] for k in ("shard", "kept", "source_sha256")} for s in summaries],
    }
    _write_atomically(output / "manifest.json", lambda path: path.write_text(json.dumps(manifest, indent=1)))
    return manifest


def _read_manifest(output):
    output = Path(output)
    manifest_path = output / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"No manifest.json in {output}: the folder was not prepared, or preparation did not finish. "
            f"Run `python -m ssr_lib prepare NAME --source DIR --output {output}`; it resumes where it stopped."
        )
    shards = json.loads(manifest_path.read_text())["shards"]
    if not shards:
        raise ValueError(f"{manifest_path} lists no shard: preparation kept no face. Read its skip counts.")
    return shards


def iter_shards(output, keys=None):
    """Yield each shard of a prepared folder as a dict of arrays, in order.

    `keys` limits what is read, such as `("ages", "identities")` without
    the images. Defaults to every array.
    """
    for shard in _read_manifest(output):
        with np.load(Path(output) / shard["shard"], allow_pickle=False) as stored:
            yield {key: stored[key] for key in (keys or stored.files)}


def load_prepared(output):
    """Read all shards of a prepared folder into one dict of arrays."""
    shards = list(iter_shards(output))
    return {key: np.concatenate([s[key] for s in shards]) for key in shards[0]}


def _split_prepared(output, identities, seed, fractions, by_identity):
    """Return the indices of each split, by identity where asked or recorded."""
    from ssr_lib import data, datasets

    identities = list(identities)
    if by_identity is None:
        by_identity = any(identities)
    if by_identity:
        indices = datasets.group_split(identities, seed, fractions)
    else:
        indices = data.split_indices(len(identities), seed, fractions)
    for name, idx in indices.items():
        if len(idx) == 0:
            raise ValueError(f"The {name} split of {output} is empty: {len(identities)} images "
                             f"({len(set(identities))} identities) are too few for fractions {fractions}.")
    return indices


def load_prepared_splits(output, seed=0, fractions=(0.8, 0.1, 0.1), by_identity=None):
    """Read a prepared folder and split it into train, validation and test `data.Split`s.

    With `by_identity` (the default when the dataset records identities),
    each person's images stay on one side (`datasets.group_split`);
    otherwise the split is random (`data.split_indices`).
    """
    from ssr_lib import data

    arrays = load_prepared(output)
    indices = _split_prepared(output, arrays["identities"], seed, fractions, by_identity)
    return {name: data.Split(arrays["images"][idx], arrays["ages"][idx].astype(np.float32), arrays["paths"][idx])
            for name, idx in indices.items()}


@dataclass
class ShardedSplit:
    """One split of a prepared folder, left on disk: which rows of which shards it holds.

    `shards` lists the `.npz` files, `rows` the split's row numbers in each
    (one array per shard) and `ages` the split's ages in that order.
    """

    shards: list
    rows: list
    ages: np.ndarray

    def __len__(self):
        return len(self.ages)


def open_prepared_splits(output, seed=0, fractions=(0.8, 0.1, 0.1), by_identity=None):
    """Split a prepared folder as `load_prepared_splits` does, reading no image.

    Returns:
        A dict from `"train"`, `"val"` and `"test"` to `ShardedSplit`s,
        which `stream_faces` and `train.train` read shard by shard.
    """
    output = Path(output)
    files = [output / shard["shard"] for shard in _read_manifest(output)]
    columns = list(iter_shards(output, keys=("ages", "identities")))
    sizes = [len(c["ages"]) for c in columns]
    ages = np.concatenate([c["ages"] for c in columns]).astype(np.float32)
    indices = _split_prepared(output, np.concatenate([c["identities"] for c in columns]),
                              seed, fractions, by_identity)
    starts = np.cumsum([0] + sizes)
    splits = {}
    for name, idx in indices.items():
        shard_of = np.searchsorted(starts, idx, side="right") - 1
        rows = [idx[shard_of == i] - starts[i] for i in range(len(files))]
        splits[name] = ShardedSplit([str(f) for f in files], rows, ages[idx])
    return splits


def stream_faces(split, shuffle=False, seed=0, epoch=0, parallel_shards=8, buffer_size=4096):
    """Stream a `ShardedSplit` as a `tf.data.Dataset` of `(uint8 image, age)` pairs.

    `parallel_shards` shards are read at a time, in parallel, and their
    faces are interleaved one by one. With `shuffle`, the order of the
    shards and of the faces in each shard is drawn from `(seed, epoch)`, and
    the interleaved faces pass through a shuffle buffer of `buffer_size`.
    The buffer matters when shards hold similar faces: UTKFace's file names
    start with the age, so each of its shards spans a few years of age.
    Memory stays near `(parallel_shards * shard size + buffer_size) * 12 KB`
    (about 150 MB with shards of 1,000), whatever the dataset's size.
    """
    import tensorflow as tf

    with np.load(split.shards[0], allow_pickle=False) as first:
        size = first["images"].shape[1]

    def read_shard(index):
        rows = split.rows[index]
        if shuffle:
            rows = np.random.default_rng([seed, epoch, int(index)]).permutation(rows)
        with np.load(split.shards[index], allow_pickle=False) as stored:
            yield stored["images"][rows], stored["ages"][rows].astype(np.float32)

    def shard_faces(index):
        signature = (tf.TensorSpec((None, size, size, 3), tf.uint8), tf.TensorSpec((None,), tf.float32))
        return tf.data.Dataset.from_generator(read_shard, args=(index,), output_signature=signature).unbatch()

    used = np.array([i for i, rows in enumerate(split.rows) if len(rows)], np.int64)
    if shuffle:
        used = np.random.default_rng([seed, epoch]).permutation(used)
    dataset = tf.data.Dataset.from_tensor_slices(used).interleave(
        shard_faces, cycle_length=parallel_shards, block_length=1,
        num_parallel_calls=parallel_shards, deterministic=True)
    if shuffle:
        # The same order on every read of this dataset, so that every worker
        # of a strategy, and Keras' read-ahead, agree on it.
        dataset = dataset.shuffle(buffer_size, seed=seed * 1000 + epoch, reshuffle_each_iteration=False)
    # Telling tf.data the count lets Keras know an epoch's length; it also
    # fails loudly if a shard changed on disk since the split was made.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(split)))
    # Under a multi-worker strategy each worker keeps its share of every batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
