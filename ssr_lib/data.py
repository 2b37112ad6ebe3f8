"""Reading UTKFace, splitting it, and caching the 64x64 arrays.

UTKFace's aligned and cropped faces are 200x200 JPEG files named
`AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`: age in years, gender 0 (male) or
1 (female), race 0 to 4. The kit reads them with OpenCV, converts them to
RGB and resizes them to 64x64 with area interpolation.

Introduced in notebook 01, *Introduction*; split in notebook 05.
"""

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ssr_lib import config

UTKFACE_FOLDER = "UTKFace"
UTKFACE_PATTERN = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")
MAX_AGE = 100  # SSR-Net predicts ages 0..100 (V = 101)
SPLITS = ("train", "val", "test")

FETCH_HINT = (
    "Download the 'Aligned&Cropped Faces' archive (UTKFace.tar.gz) from the "
    "UTKFace project page, unpack it so that the images lie in "
    "<data dir>/UTKFace/, and point SSR_DATA_DIR (or --data-dir) at <data dir> "
    "if it is not the project's data/ folder. README.md, section 'Datasets', has the details."
)


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset folder is missing or contains no usable files."""


@dataclass
class SkipReport:
    """Counts of kept and skipped files, with a reason and an example name per skip."""

    dataset: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def skip(self, reason, name):
        """Count one skipped file under `reason` and keep the first name as an example."""
        self.skipped[reason] += 1
        self.examples.setdefault(reason, name)

    @property
    def total_skipped(self):
        return sum(self.skipped.values())

    def __str__(self):
        lines = [f"{self.dataset}: kept {self.kept:,} images, skipped {self.total_skipped:,}"]
        for reason, count in self.skipped.most_common():
            lines.append(f"  {count:>6,}  {reason} (e.g. {self.examples[reason]})")
        return "\n".join(lines)


@dataclass(frozen=True)
class FaceRecord:
    """One usable image of a dataset, as every reader in the kit returns it.

    `path` is relative to the dataset's source folder. `gender` is 0 for
    female, 1 for male and -1 when unknown (UTKFace's 0-male scheme is
    converted). `identity` names the person where the dataset records it and
    is "" otherwise. `face_box` is `(x1, y1, x2, y2)` in the source image's
    pixels and `landmarks` a tuple of `(x, y)` points, each `None` when the
    dataset does not ship them.
    """

    path: str
    age: int
    gender: int = -1
    identity: str = ""
    face_box: tuple = None
    landmarks: tuple = None


@dataclass
class Split:
    """One split of a dataset: RGB uint8 images, ages and file names.

    `images` has shape `(n, size, size, 3)`, dtype uint8, values 0..255, RGB
    channel order; `ages` has shape `(n,)`, dtype float32; `files` contains the
    source file names.
    """

    images: np.ndarray
    ages: np.ndarray
    files: np.ndarray

    def __len__(self):
        return len(self.ages)


def find_utkface(data_dir=None):
    """Return the folder with UTKFace's images, or raise with what to do.

    `data_dir` may be the folder that contains `UTKFace/` or the image folder
    itself. Defaults to `config.data_dir()`.
    """
    data_dir = Path(data_dir) if data_dir is not None else config.data_dir()
    folder = data_dir / UTKFACE_FOLDER if (data_dir / UTKFACE_FOLDER).is_dir() else data_dir
    if not folder.is_dir():
        raise DatasetNotFoundError(f"UTKFace not found: {folder} does not exist. {FETCH_HINT}")
    if not any(name.endswith(".jpg") for name in os.listdir(folder)):
        raise DatasetNotFoundError(
            f"UTKFace not found: {folder} contains no .jpg files. {FETCH_HINT}"
        )
    return folder


def read_utkface(folder):
    """List UTKFace's files with ages parsed from their names.

    Files whose names do not follow `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`
    and ages above 100 are counted in the report instead of raising an error.

    Returns:
        `(records, report)`: a list of `(file name, age, gender, race)`
        tuples sorted by file name, and a `SkipReport`.
    """
    report = SkipReport("UTKFace")
    records = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jpg"):
            continue
        match = UTKFACE_PATTERN.match(name)
        if match is None:
            report.skip("malformed file name (expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg)", name)
            continue
        age, gender, race = (int(match.group(i)) for i in (1, 2, 3))
        if age > MAX_AGE:
            report.skip(f"age above {MAX_AGE}, outside the model's range", name)
            continue
        records.append((name, age, gender, race))
    report.kept = len(records)
    return records, report


def load_face(path, image_size=64):
    """Read one face image as RGB uint8 of shape `(image_size, image_size, 3)`.

    Returns `None` when OpenCV cannot decode the file.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA)


def _cache_key(folder, records, image_size):
    digest = hashlib.sha1(f"{folder.resolve()}|{image_size}".encode())
    for name, *_ in records:
        digest.update(name.encode())
    return digest.hexdigest()[:12]


def _read_images(folder, records, image_size, report):
    """Decode all records in threads, counting unreadable files in `report`."""
    paths = [folder / name for name, *_ in records]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        faces = list(pool.map(lambda p: load_face(p, image_size), paths, chunksize=64))
    keep = [face is not None for face in faces]
    for (name, *_), ok in zip(records, keep):
        if not ok:
            report.skip("unreadable image (OpenCV could not decode it)", name)
    report.kept = sum(keep)
    images = np.stack([face for face in faces if face is not None]) if any(keep) else None
    return images, np.array(keep)


def prepare_utkface(data_dir=None, image_size=64, cache=True, verbose=True):
    """Read every usable UTKFace image at `image_size` and cache the arrays.

    The first call decodes all images, which took about 8 s for 20,700 files
    on a 2-core machine. Later calls read one `.npz` file from
    `config.cache_dir()`.
    The cache key covers the folder, the file names and the image size, so
    adding or removing files prepares the data again.

    Returns:
        `(arrays, report)`: a dict with `images` (uint8, `(n, size, size, 3)`,
        RGB), `ages` (float32), `genders`, `races` (int8) and `files`
        (str), sorted by file name; and the `SkipReport`.

    Raises:
        DatasetNotFoundError: if the folder is missing, empty, or has no
            readable image.
    """
    folder = find_utkface(data_dir)
    records, report = read_utkface(folder)
    if not records:
        raise DatasetNotFoundError(
            f"UTKFace not found: no file in {folder} has a valid name. {FETCH_HINT}"
        )
    cache_file = config.cache_dir() / f"utkface_{image_size}_{_cache_key(folder, records, image_size)}.npz"
    if cache and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        report.kept = len(arrays["ages"])
        for reason, count, example in zip(arrays["skip_reasons"], arrays["skip_counts"], arrays["skip_examples"]):
            report.skipped[str(reason)] = int(count)
            report.examples[str(reason)] = str(example)
        if verbose:
            print(f"Loaded prepared arrays from {cache_file}")
            print(report)
        return {k: v for k, v in arrays.items() if not k.startswith("skip_")}, report

    images, keep = _read_images(folder, records, image_size, report)
    if images is None:
        raise DatasetNotFoundError(f"UTKFace: none of the images in {folder} could be read. {FETCH_HINT}")
    kept = [record for record, ok in zip(records, keep) if ok]
    arrays = {
        "images": images,
        "ages": np.array([r[1] for r in kept], np.float32),
        "genders": np.array([r[2] for r in kept], np.int8),
        "races": np.array([r[3] for r in kept], np.int8),
        "files": np.array([r[0] for r in kept]),
    }
    if cache:
        _write_cache(cache_file, arrays, report)
    if verbose:
        print(report)
    return arrays, report


def _write_cache(cache_file, arrays, report):
    """Write the arrays and the skip report to `cache_file` through a temporary file."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    reasons = list(report.skipped)
    partial = cache_file.with_suffix(".partial.npz")
    np.savez(
        partial,
        **arrays,
        skip_reasons=np.array(reasons, dtype=str),
        skip_counts=np.array([report.skipped[r] for r in reasons], np.int64),
        skip_examples=np.array([report.examples[r] for r in reasons], dtype=str),
    )
    os.replace(partial, cache_file)


def split_indices(n, seed=0, fractions=(0.8, 0.1, 0.1)):
    """Split `range(n)` at random into train, validation and test indices.

    The same `n`, `seed` and `fractions` always give the same split.

    Returns:
        A dict from `"train"`, `"val"` and `"test"` to sorted index arrays.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(
            f"Expected three non-negative fractions that sum to 1. Received: fractions={fractions}"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = np.split(order, [n_train, n_train + n_val])
    return {name: np.sort(part) for name, part in zip(SPLITS, parts)}


def load_utkface(data_dir=None, image_size=64, seed=0, fractions=(0.8, 0.1, 0.1), verbose=True):
    """Load UTKFace and split it into train, validation and test sets.

    Args:
        data_dir: folder containing `UTKFace/`, or the image folder itself.
            Defaults to `config.data_dir()` (`$SSR_DATA_DIR` or `data/`).
        image_size: side of the square images. Defaults to `64`.
        seed: seed of the random split. Defaults to `0`.
        fractions: train, validation and test shares. Defaults to
            `(0.8, 0.1, 0.1)`.
        verbose: print what was kept and skipped. Defaults to `True`.

    Returns:
        A dict from `"train"`, `"val"` and `"test"` to `Split` objects with
        RGB uint8 images.
    """
    arrays, _ = prepare_utkface(data_dir, image_size, verbose=verbose)
    indices = split_indices(len(arrays["ages"]), seed, fractions)
    return {
        name: Split(arrays["images"][idx], arrays["ages"][idx], arrays["files"][idx])
        for name, idx in indices.items()
    }
