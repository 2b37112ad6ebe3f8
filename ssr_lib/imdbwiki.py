"""Reading and cleaning IMDB-WIKI's metadata (`imdb.mat`, `wiki.mat`).

The IMDB-WIKI site ships each part as a folder of face crops (`imdb_crop/`,
`wiki_crop/`) with a Matlab file beside the images. That file contains one
struct of row vectors:

- `dob`: date of birth as a Matlab serial date number (days since year 0),
- `photo_taken`: the year the photo was taken,
- `full_path`: a cell array of image paths relative to the crop folder,
- `gender`: 0 for female, 1 for male, NaN when unknown,
- `face_location`: a cell array of `[x1, y1, x2, y2]` boxes,
- `face_score`: the detector's score, `-inf` when no face was found,
- `second_face_score`: the second face's score, NaN when there is none,
- and for IMDB `celeb_id`, an identity number.

The cleaning rules follow the SSR-Net authors' preprocessing: a face score of
at least 1.0, no second face, a known gender and an age of 0 to 100. The age is
the photo year minus the birth year, minus one more when the birth date falls in
the second half of the year, because the photo's month is not recorded.
"""

import datetime
import math
from pathlib import Path

import numpy as np

from ssr_lib.data import MAX_AGE, FaceRecord, SkipReport

MIN_FACE_SCORE = 1.0
# Matlab serial date numbers count from year 0, Python ordinals from year 1.
MATLAB_ORDINAL_OFFSET = 366


def birth_date(datenum):
    """Convert a Matlab serial date number to a `datetime.date`, or `None` if invalid."""
    if datenum is None or not math.isfinite(datenum):
        return None
    ordinal = int(datenum) - MATLAB_ORDINAL_OFFSET
    if ordinal < 1:
        return None
    try:
        return datetime.date.fromordinal(ordinal)
    except (OverflowError, ValueError):
        return None


def age_at_photo(born, photo_year):
    """Return the age in whole years in `photo_year` of someone born on `born`.

    The photo's month is unknown, so someone born in July or later is taken
    not to have had the birthday yet.
    """
    return int(photo_year) - born.year - (1 if born.month >= 7 else 0)


def has_single_face(face_score, second_face_score):
    """Return whether the detector found one clear face and no second one."""
    clear = math.isfinite(face_score) and face_score >= MIN_FACE_SCORE
    alone = math.isnan(second_face_score) or second_face_score <= 0
    return clear and alone


def has_known_gender(gender):
    """Return whether the gender label is 0 or 1 (NaN means unknown)."""
    return math.isfinite(gender) and gender in (0, 1)


def _text(cell):
    """Read one entry of a `loadmat` cell array of strings."""
    value = np.asarray(cell).reshape(-1)
    return str(value[0]) if value.size else ""


def load_metadata(mat_path):
    """Read an `imdb.mat` or `wiki.mat` file into a dict of NumPy arrays.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not an IMDB-WIKI metadata file.
    """
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(
            f"IMDB-WIKI metadata not found: {mat_path}. Run `python -m ssr_lib download imdb` (or wiki), "
            "or download imdb_crop.tar or wiki_crop.tar from the IMDB-WIKI project page and unpack it; "
            "the .mat file lies inside the crop folder."
        )
    content = loadmat(mat_path)
    parts = [key for key in ("imdb", "wiki") if key in content]
    if not parts:
        raise ValueError(f"Expected a struct named imdb or wiki in {mat_path}. Received: "
                         f"{sorted(k for k in content if not k.startswith('__'))}")
    meta = content[parts[0]][0, 0]
    arrays = {
        "dob": meta["dob"].reshape(-1).astype(float),
        "photo_taken": meta["photo_taken"].reshape(-1).astype(float),
        "full_path": [_text(c) for c in meta["full_path"].reshape(-1)],
        "gender": meta["gender"].reshape(-1).astype(float),
        "face_location": [np.asarray(c, float).reshape(-1) for c in meta["face_location"].reshape(-1)],
        "face_score": meta["face_score"].reshape(-1).astype(float),
        "second_face_score": meta["second_face_score"].reshape(-1).astype(float),
    }
    names = meta.dtype.names
    arrays["celeb_id"] = (meta["celeb_id"].reshape(-1).astype(int) if "celeb_id" in names
                          else np.full(len(arrays["dob"]), -1))
    return arrays


def read_imdbwiki(mat_path):
    """List the photos of `imdb.mat` or `wiki.mat` that pass the cleaning rules.

    Returns:
        `(records, report)`: a list of `FaceRecord` with paths relative to
        the `.mat` file's folder, and a `SkipReport` counting each rule's
        rejections. A record is counted under the first rule it fails, in
        the order: face, gender, date of birth, photo year, age.
    """
    meta = load_metadata(mat_path)
    report = SkipReport(Path(mat_path).stem.upper())
    records = []
    for i, path in enumerate(meta["full_path"]):
        if not has_single_face(meta["face_score"][i], meta["second_face_score"][i]):
            if not math.isfinite(meta["face_score"][i]):
                report.skip("no face found (face_score is -inf or NaN)", path)
            elif meta["face_score"][i] < MIN_FACE_SCORE:
                report.skip(f"face score below {MIN_FACE_SCORE}", path)
            else:
                report.skip("second face in the photo", path)
            continue
        if not has_known_gender(meta["gender"][i]):
            report.skip("unknown gender", path)
            continue
        born = birth_date(meta["dob"][i])
        if born is None:
            report.skip("invalid date of birth", path)
            continue
        photo_year = meta["photo_taken"][i]
        if not math.isfinite(photo_year) or photo_year < 1:
            report.skip("invalid photo year", path)
            continue
        age = age_at_photo(born, photo_year)
        if age < 0:
            report.skip("photo taken before birth", path)
            continue
        if age > MAX_AGE:
            report.skip(f"age above {MAX_AGE}", path)
            continue
        box = tuple(float(v) for v in meta["face_location"][i][:4])
        identity = str(meta["celeb_id"][i]) if meta["celeb_id"][i] >= 0 else ""
        records.append(FaceRecord(path, age, int(meta["gender"][i]), identity, face_box=box))
    report.kept = len(records)
    return records, report
