"""One reader per face dataset, all returning `FaceRecord`s and a `SkipReport`.

Each reader takes the folder the dataset was unpacked into (its *source*
folder) and returns `(records, report)`: the usable images with their labels,
paths relative to that folder, and a count of everything skipped and why.
`READERS` maps the names that `python -m ssr_lib prepare NAME` accepts to
these functions. The readers only list files and parse names and label files.
The preparation step decodes the images later and counts unreadable ones.

`group_split` splits records so that no person appears in two of the train,
validation and test sets.

Introduced in notebook 02, *Preparing the data*.
"""

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ssr_lib import data, imdbwiki
from ssr_lib.data import MAX_AGE, SPLITS, DatasetNotFoundError, FaceRecord, SkipReport

IMAGE_SUFFIXES = (".jpg", ".jpeg")
AGE_ABOVE_MAX = f"age above {MAX_AGE}, outside the model's range"


def read_utkface(source):
    """Read UTKFace's aligned and cropped faces (`*.jpg.chip.jpg`)."""
    folder = data.find_utkface(source)
    rows, report = data.read_utkface(folder)
    prefix = "" if folder == Path(source) else folder.name + "/"
    records = [FaceRecord(prefix + name, age, 1 - gender) for name, age, gender, _ in rows]
    return records, report


def _read_imdbwiki(source, top_folder, mat_name):
    source = Path(source)
    root = _archive_root(source, top_folder)
    records, report = imdbwiki.read_imdbwiki(root / mat_name)
    if root != source:
        records = [replace(r, path=f"{top_folder}/{r.path}") for r in records]
    return records, report


def read_imdb(source):
    """Read IMDB's crops: `source` is the `imdb_crop` folder with `imdb.mat`, or the folder above it."""
    return _read_imdbwiki(source, "imdb_crop", "imdb.mat")


def read_wiki(source):
    """Read WIKI's crops: `source` is the `wiki_crop` folder with `wiki.mat`, or the folder above it."""
    return _read_imdbwiki(source, "wiki_crop", "wiki.mat")


# Helpers shared by the readers below.


def _require(path, dataset, hint):
    """Raise `DatasetNotFoundError` naming `path` and the fix when `path` does not exist."""
    if not path.exists():
        raise DatasetNotFoundError(f"{dataset} not found: {path} does not exist. {hint}")


def _archive_root(source, top_folder):
    """Return `source/top_folder` if the archive was unpacked with its top folder, else `source`."""
    nested = source / top_folder
    return nested if nested.is_dir() else source


def _image_names(folder):
    """List the names of the JPEG files in `folder`, sorted. Other files are ignored."""
    return sorted(
        entry.name for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
    )


def _relative(path, source):
    """Return `path` relative to `source` with '/' separators."""
    return path.relative_to(source).as_posix()


def _finish(records, report):
    """Sort `records` by path and store their count in `report`."""
    records.sort(key=lambda record: record.path)
    report.kept = len(records)
    return records, report


# MORPH album 2

MORPH2_PATTERN = re.compile(r"^(\d+)_(\d+)([MF])(\d+)\.(?:JPG|jpg)$")
MORPH2_GENDERS = {"F": 0, "M": 1}
MORPH2_HINT = (
    "MORPH album 2 is distributed by the FaceAgingGroup (University of North Carolina "
    "Wilmington) after an application form on the FaceAgingGroup site. Unpack the images "
    "so that the .JPG files lie directly in this folder."
)


def read_morph2(source):
    """Read MORPH album 2 as the SSR-Net authors used it: one flat folder of JPEG files.

    Each name carries the labels, e.g. `009055_1M54.JPG`: subject 009055,
    photo 1 of that subject, male (`M`) or female (`F`), age 54. The
    subject id has six digits and the photo index one or two (`1M`, `01M`
    and `21M` all occur). The images have no face boxes or landmarks in this
    form, because the authors detected and aligned the faces with dlib.

    Returns:
        `(records, report)`: `FaceRecord`s with the subject id as identity,
        sorted by path, and a `SkipReport` counting malformed names and ages
        above 100. Files that are not JPEG files are ignored.

    Raises:
        DatasetNotFoundError: if `source` is missing or contains no JPEG file.
    """
    folder = Path(source)
    _require(folder, "MORPH2", MORPH2_HINT)
    names = _image_names(folder)
    if not names:
        raise DatasetNotFoundError(
            f"MORPH2 not found: {folder} contains no .JPG files. {MORPH2_HINT}"
        )

    report = SkipReport("MORPH2")
    records = []
    for name in names:
        match = MORPH2_PATTERN.match(name)
        if match is None:
            report.skip("malformed file name (expected SUBJECT_PHOTO{M|F}AGE.JPG)", name)
            continue
        subject, _, letter, age = match.groups()
        if int(age) > MAX_AGE:
            report.skip(AGE_ABOVE_MAX, name)
            continue
        records.append(FaceRecord(name, int(age), MORPH2_GENDERS[letter], subject))
    return _finish(records, report)


# FG-NET

FGNET_PATTERN = re.compile(r"^(\d{3})[Aa](\d+)([a-z]?)\.(?:JPG|jpg|JPEG|jpeg)$")
FGNET_POINTS = 68
FGNET_HINT = (
    "Download FGNET.zip from the FG-NET Aging Database page and unpack it here, so that "
    "this folder (or its FGNET/ subfolder) contains images/ and points/."
)


def read_pts(path, n_points=FGNET_POINTS):
    """Read the landmarks of a `.pts` file, or return `None` if it does not follow the format.

    The format is the line `version: 1`, the line `n_points: 68`, a line
    `{`, one `x y` line per point and a closing `}` line. Blank lines are
    ignored. A file with another number of points is rejected.
    """
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) != n_points + 4 or not lines[0].startswith("version:"):
        return None
    if lines[1].replace(" ", "") != f"n_points:{n_points}" or lines[2] != "{" or lines[-1] != "}":
        return None
    try:
        return tuple(_parse_point(line) for line in lines[3:-1])
    except ValueError:
        return None


def _parse_point(line):
    """Parse one `x y` line into a pair of floats, raising `ValueError` if it is not one."""
    x, y = line.split()
    return float(x), float(y)


def _list_pts_files(folder):
    """Map the lowercased stem of each `.pts` file in `folder` to its path (empty if no folder)."""
    if not folder.is_dir():
        return {}
    return {path.stem.lower(): path for path in folder.iterdir() if path.suffix.lower() == ".pts"}


def read_fgnet(source):
    """Read FG-NET: 1,002 images of 82 subjects, with 68 landmarks per image.

    Layout: `images/` contains the photos, named `SSSAaa.JPG` for subject `SSS`
    at age `aa`, e.g. `001A02.JPG`. A lowercase `a` also occurs, and a
    trailing letter distinguishes photos of one subject at one age
    (`010A07a.JPG`, `010A07b.JPG`). `points/` contains one `.pts` file per
    image, named like `001a02.pts` and matched to its image regardless of
    case, in the format that `read_pts` reads.
    `source` may also be the folder that contains `FGNET/`. FG-NET records
    no gender.

    A missing `.pts` file leaves the record's landmarks at `None`. A `.pts`
    file that does not parse is counted in the report under "unreadable
    landmark file", and its image is still kept, without landmarks, because
    the age label comes from the file name.

    Returns:
        `(records, report)`: `FaceRecord`s with the subject id as identity,
        sorted by path, and a `SkipReport` that counts malformed names, ages
        above 100, unreadable `.pts` files and `.pts` files without an image.

    Raises:
        DatasetNotFoundError: if `images/` is missing.
    """
    source = Path(source)
    root = _archive_root(source, "FGNET")
    images = root / "images"
    _require(images, "FG-NET", FGNET_HINT)
    pts_files = _list_pts_files(root / "points")

    report = SkipReport("FG-NET")
    records = []
    for name in _image_names(images):
        path = _relative(images / name, source)
        pts_file = pts_files.pop(Path(name).stem.lower(), None)
        match = FGNET_PATTERN.match(name)
        if match is None:
            report.skip("malformed file name (expected SSSAaa.JPG, e.g. 001A02.JPG)", path)
            continue
        subject, age = match.group(1), int(match.group(2))
        if age > MAX_AGE:
            report.skip(AGE_ABOVE_MAX, path)
            continue
        landmarks = read_pts(pts_file) if pts_file is not None else None
        if pts_file is not None and landmarks is None:
            report.skip("unreadable landmark file (image kept without landmarks)",
                        _relative(pts_file, source))
        records.append(FaceRecord(path, age, -1, subject, landmarks=landmarks))
    for pts_file in sorted(pts_files.values()):
        report.skip("landmark file without an image", _relative(pts_file, source))
    return _finish(records, report)


# MegaAge-Asian

MEGAAGE_PARTS = ("train", "test")
MEGAAGE_HINT = (
    "Download MegaAge-Asian from the MegaAge project page and unpack it here, so that this "
    "folder (or its megaage_asian/ subfolder) contains train/, test/ and list/."
)


def read_megaage_asian(source, part="all"):
    """Read MegaAge-Asian, whose images come with the dataset's own train/test split.

    Layout: `train/` and `test/` contain the images. `list/train_name.txt` and
    `list/train_age.txt` give one image name and one age per line, in the same
    order, and `list/test_name.txt` and `list/test_age.txt` do the same for
    `test/`. `source` may also be the folder that contains `megaage_asian/`.
    MegaAge-Asian records no gender and no identities.

    Args:
        source: the folder MegaAge-Asian was unpacked into.
        part: `"train"`, `"test"`, or `"all"` (the default) for both.

    Returns:
        `(records, report)`: `FaceRecord`s sorted by path (`test/...` before
        `train/...`) and a `SkipReport`. A listed image is counted under the
        first rule it fails, in the order: image missing, invalid age, age
        above 100. Extra lines of the longer list file are counted too.

    Raises:
        ValueError: if `part` is not `"all"`, `"train"` or `"test"`.
        DatasetNotFoundError: if an image folder or list file is missing.
    """
    if part not in ("all",) + MEGAAGE_PARTS:
        raise ValueError(f"Expected part 'all', 'train' or 'test'. Received: part={part!r}")
    source = Path(source)
    root = _archive_root(source, "megaage_asian")
    report = SkipReport("MegaAge-Asian")
    records = []
    for name in MEGAAGE_PARTS if part == "all" else (part,):
        records += _read_megaage_part(source, root, name, report)
    return _finish(records, report)


def _read_lines(path):
    """Read a list file's stripped lines, without the blank lines at its end."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _parse_age(text):
    """Parse an age such as `23` or `23.0`. Return `None` unless it is a whole number >= 0."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _read_megaage_part(source, root, part, report):
    """List the usable images of one part (`train` or `test`), counting the rest in `report`."""
    folder = root / part
    name_file = root / "list" / f"{part}_name.txt"
    age_file = root / "list" / f"{part}_age.txt"
    for path in (folder, name_file, age_file):
        _require(path, "MegaAge-Asian", MEGAAGE_HINT)
    names, ages = _read_lines(name_file), _read_lines(age_file)
    present = set(os.listdir(folder))

    for name in names[len(ages):]:
        report.skip(f"name without an age ({name_file.name} is longer than {age_file.name})",
                    f"{part}/{name}")
    for line in range(len(names), len(ages)):
        report.skip(f"age without a name ({age_file.name} is longer than {name_file.name})",
                    f"{_relative(age_file, source)} line {line + 1}")

    records = []
    for name, text in zip(names, ages):
        age = _parse_age(text)
        if name not in present:
            report.skip("image listed but missing", f"{part}/{name}")
        elif age is None:
            report.skip("invalid age (expected a whole number of years)", f"{part}/{name}")
        elif age > MAX_AGE:
            report.skip(AGE_ABOVE_MAX, f"{part}/{name}")
        else:
            records.append(FaceRecord(_relative(folder / name, source), age))
    return records


# UTKFace in-the-wild faces

UTKFACE_WILD_PATTERN = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg$")
UTKFACE_WILD_PARTS = ("part1", "part2", "part3")
UTKFACE_LANDMARKS = 68
UTKFACE_WILD_HINT = (
    "Download the 'In-the-wild Faces' archives (part1, part2, part3) and the landmark lists "
    "(landmark_list_part1.txt to landmark_list_part3.txt) from the UTKFace project page, and "
    "unpack them so that part1/, part2/, part3/ and the .txt files lie in this folder."
)


def _read_landmark_list(path, report):
    """Read `landmark_list_partN.txt` into a dict from image name to 68 `(x, y)` points.

    Each line is an image name and 136 numbers `x0 y0 x1 y1 ...`, separated
    by spaces. A missing file gives an empty dict.
    """
    if not path.is_file():
        return {}
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        example = f"{path.name} line {number}"
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            values = []
        if len(values) != 2 * UTKFACE_LANDMARKS:
            report.skip("malformed landmark line (expected a name and 136 numbers)", example)
        elif fields[0] in table:
            report.skip("duplicate landmark line (the first one is used)", example)
        else:
            table[fields[0]] = tuple(zip(values[0::2], values[1::2]))
    return table


def read_utkface_wild(source):
    """Read UTKFace's in-the-wild faces: whole photos, with 68 landmarks per face.

    Layout: `part1/`, `part2/` and `part3/` contain photos named
    `AGE_GENDER_RACE_DATETIME.jpg`, and `landmark_list_part1.txt` to
    `landmark_list_part3.txt` lie beside them, one line per photo of that
    part (see `_read_landmark_list`). UTKFace codes gender 0 for male and
    1 for female, which the records convert to the kit's 1 for male and
    0 for female. `face_box` stays `None`, and UTKFace records no identities.

    NOTE: the landmarks are taken to be in the in-the-wild photo's pixels.
    Public code draws them on the `partN/` photos, but the UTKFace project
    page does not state it, and this reader does not check it.

    Parts whose folder is missing are left out. A photo without a landmark
    line, or whose line is malformed, is kept with `landmarks=None`.

    Returns:
        `(records, report)`: `FaceRecord`s sorted by path and a
        `SkipReport` that counts malformed names, ages above 100, malformed
        or duplicate landmark lines and landmark lines without a photo.

    Raises:
        DatasetNotFoundError: if none of `part1/`, `part2/`, `part3/` exists.
    """
    source = Path(source)
    parts = [part for part in UTKFACE_WILD_PARTS if (source / part).is_dir()]
    if not parts:
        raise DatasetNotFoundError(
            f"UTKFace in-the-wild not found: {source} contains none of part1/, part2/, part3/. "
            f"{UTKFACE_WILD_HINT}"
        )

    report = SkipReport("UTKFace in-the-wild")
    records = []
    for part in parts:
        landmark_file = source / f"landmark_list_{part}.txt"
        landmarks = _read_landmark_list(landmark_file, report)
        for name in _image_names(source / part):
            points = landmarks.pop(name, None)
            match = UTKFACE_WILD_PATTERN.match(name)
            if match is None:
                report.skip("malformed file name (expected AGE_GENDER_RACE_DATETIME.jpg)",
                            f"{part}/{name}")
                continue
            age, gender = int(match.group(1)), int(match.group(2))
            if age > MAX_AGE:
                report.skip(AGE_ABOVE_MAX, f"{part}/{name}")
                continue
            records.append(FaceRecord(f"{part}/{name}", age, 1 - gender, landmarks=points))
        for name in sorted(landmarks):
            report.skip("landmark line without an image", f"{landmark_file.name}: {name}")
    return _finish(records, report)


READERS = {
    "utkface": read_utkface,
    "imdb": read_imdb,
    "wiki": read_wiki,
    "morph2": read_morph2,
    "fgnet": read_fgnet,
    "megaage-asian": read_megaage_asian,
    "utkface-wild": read_utkface_wild,
}


def group_split(identities, seed=0, fractions=(0.8, 0.1, 0.1)):
    """Split record indices into train, validation and test sets, keeping each identity on one side.

    The unique identities are shuffled with `seed` and their images laid end
    to end. The sequence is cut where the fractions of the image count fall.
    An identity that straddles a cut goes to the side that contains the
    middle of its images, so each cut moves by at most half of that
    identity's image count. Each record with identity `""` counts as an
    identity of its own.

    Args:
        identities: one identity string per record, e.g.
            `[r.identity for r in records]`.
        seed: seed of the shuffle. Defaults to `0`.
        fractions: train, validation and test shares of the images.
            Defaults to `(0.8, 0.1, 0.1)`.

    Returns:
        A dict from `"train"`, `"val"` and `"test"` to sorted index arrays,
        as `data.split_indices` returns.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(
            f"Expected three non-negative fractions that sum to 1. Received: fractions={fractions}"
        )
    groups = {}
    for index, identity in enumerate(identities):
        # A record without identity gets a key of its own, so it forms a group alone.
        key = (identity, -1) if identity else ("", index)
        groups.setdefault(key, []).append(index)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))

    n = sum(len(members) for members in groups.values())
    cuts = np.cumsum(fractions[:2]) * n
    parts = {name: [] for name in SPLITS}
    start = 0
    for k in order:
        members = groups[keys[k]]
        middle = start + len(members) / 2
        # 0 if the middle lies before the first cut, 1 if between the cuts, 2 after both.
        side = int(np.searchsorted(cuts, middle, side="right"))
        parts[SPLITS[side]].extend(members)
        start += len(members)
    return {name: np.sort(np.array(parts[name], dtype=np.int64)) for name in SPLITS}


def thumbnail_vectors(images, size=16, grayscale=True):
    """Shrink each image to `size`x`size` pixels and return the pixels as unit vectors with zero mean.

    The dot product of two such vectors is the cosine similarity of the
    thumbnails, which is close to 1 for copies of the same photo.
    """
    import cv2

    if grayscale:
        images = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image for image in images]
    vectors = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])
    vectors = vectors.reshape(len(vectors), -1).astype(np.float32)
    vectors -= vectors.mean(axis=1, keepdims=True)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-6
    return vectors


def duplicate_groups(images, threshold=0.995, size=16, chunk=2048):
    """Find near-identical images and label each group with a shared identity.

    Each image becomes a `size`x`size` grayscale vector (`thumbnail_vectors`).
    Two images whose vectors have a cosine similarity above
    `threshold` are taken to be the same photo, and groups are joined
    through shared members. UTKFace contains such copies, some with different
    age labels, and a random split puts many of them on both sides.

    Returns:
        One identity string per image: `"photo-N"` for members of a group,
        `""` for images without a copy, ready for `group_split`.
    """
    vectors = thumbnail_vectors(images, size)
    parent = np.arange(len(vectors))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(vectors), chunk):
        similarity = vectors[start:start + chunk] @ vectors.T
        rows, columns = np.nonzero(similarity > threshold)
        for i, j in zip(rows + start, columns):
            if i < j:
                parent[root(j)] = root(i)
    roots = np.array([root(i) for i in range(len(vectors))])
    sizes = np.bincount(roots, minlength=len(roots))
    return [f"photo-{r}" if sizes[r] > 1 else "" for r in roots]
