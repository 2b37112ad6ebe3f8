"""IMDB-WIKI metadata, read from a fixture in the published `.mat` layout."""

import datetime
import math

import numpy as np
import pytest
from scipy.io import savemat

from ssr_lib import imdbwiki


def datenum(year, month, day):
    """Matlab serial date number of a date."""
    return datetime.date(year, month, day).toordinal() + 366


# (path, dob, photo_taken, gender, face_score, second_face_score, celeb_id)
ROWS = [
    ("01/a_1980-3-15_2010.jpg", datenum(1980, 3, 15), 2010, 1.0, 3.5, math.nan, 1),  # kept, 30
    ("02/b_1980-9-1_2010.jpg", datenum(1980, 9, 1), 2010, 0.0, 2.0, math.nan, 2),  # kept, 29
    ("03/c.jpg", datenum(1970, 1, 1), 2000, 1.0, -math.inf, math.nan, 3),  # no face
    ("04/d.jpg", datenum(1970, 1, 1), 2000, 1.0, 0.8, math.nan, 4),  # low score
    ("05/e.jpg", datenum(1970, 1, 1), 2000, 0.0, 4.2, 2.1, 5),  # second face
    ("06/f.jpg", datenum(1970, 1, 1), 2000, math.nan, 4.0, math.nan, 6),  # unknown gender
    ("07/g.jpg", 0.0, 2000, 1.0, 4.0, math.nan, 7),  # zero date
    ("08/h.jpg", math.nan, 2000, 0.0, 4.0, math.nan, 8),  # NaN date
    ("09/i.jpg", datenum(1980, 1, 1), 1975, 1.0, 4.0, math.nan, 9),  # before birth
    ("10/j.jpg", datenum(1890, 1, 1), 2000, 1.0, 4.0, math.nan, 10),  # age 110
    ("11/k.jpg", datenum(1970, 1, 1), 2000, 1.0, math.nan, math.nan, 11),  # NaN score
    ("12/l_1999-12-31_2000.jpg", datenum(1999, 12, 31), 2000, 0.0, 1.0, 0.0, 12),  # kept, 0
]


def write_mat(path, part, rows, with_identity=True):
    """Write `rows` as IMDB-WIKI does: one struct of 1xN fields, cell arrays for text and boxes."""
    n = len(rows)
    full_path = np.empty((1, n), dtype=object)
    boxes = np.empty((1, n), dtype=object)
    for i, row in enumerate(rows):
        full_path[0, i] = row[0]
        boxes[0, i] = np.array([[10.0, 20.0, 110.0, 140.0]])
    fields = {
        "dob": np.array([[r[1] for r in rows]]),
        "photo_taken": np.array([[r[2] for r in rows]], dtype=np.uint16),
        "full_path": full_path,
        "gender": np.array([[r[3] for r in rows]]),
        "name": full_path.copy(),
        "face_location": boxes,
        "face_score": np.array([[r[4] for r in rows]]),
        "second_face_score": np.array([[r[5] for r in rows]]),
    }
    if with_identity:
        fields["celeb_id"] = np.array([[r[6] for r in rows]], dtype=np.uint16)
    savemat(path, {part: fields})
    return path


@pytest.fixture
def imdb_mat(tmp_path):
    return write_mat(tmp_path / "imdb.mat", "imdb", ROWS)


def test_kept_records_and_ages(imdb_mat):
    records, report = imdbwiki.read_imdbwiki(imdb_mat)
    assert [r.path for r in records] == ["01/a_1980-3-15_2010.jpg", "02/b_1980-9-1_2010.jpg",
                                         "12/l_1999-12-31_2000.jpg"]
    assert [r.age for r in records] == [30, 29, 0]
    assert [r.gender for r in records] == [1, 0, 0]
    assert records[0].identity == "1"
    assert records[0].face_box == (10.0, 20.0, 110.0, 140.0)
    assert report.kept == 3


def test_skip_counts_by_rule(imdb_mat):
    _, report = imdbwiki.read_imdbwiki(imdb_mat)
    assert dict(report.skipped) == {
        "no face found (face_score is -inf or NaN)": 2,
        "face score below 1.0": 1,
        "second face in the photo": 1,
        "unknown gender": 1,
        "invalid date of birth": 2,
        "photo taken before birth": 1,
        "age above 100": 1,
    }
    assert report.total_skipped + report.kept == len(ROWS)


def test_wiki_without_identities(tmp_path):
    path = write_mat(tmp_path / "wiki.mat", "wiki", ROWS[:2], with_identity=False)
    records, report = imdbwiki.read_imdbwiki(path)
    assert [r.identity for r in records] == ["", ""]
    assert report.dataset == "WIKI"


def test_metadata_layout_as_loadmat_reads_it(imdb_mat):
    meta = imdbwiki.load_metadata(imdb_mat)
    assert meta["full_path"][0] == "01/a_1980-3-15_2010.jpg"
    assert meta["dob"][0] == datenum(1980, 3, 15)
    assert math.isinf(meta["face_score"][2])


@pytest.mark.parametrize("value", [0.0, -5.0, math.nan, math.inf, 1e12])
def test_invalid_birth_dates_rejected(value):
    assert imdbwiki.birth_date(value) is None


def test_matlab_datenum_conversion():
    assert imdbwiki.birth_date(datenum(1985, 7, 4)) == datetime.date(1985, 7, 4)
    assert imdbwiki.birth_date(730_486.0) == datetime.date(2000, 1, 1)  # Matlab datenum(2000, 1, 1)


def test_second_half_birthdays_counted_one_year_younger():
    assert imdbwiki.age_at_photo(datetime.date(1980, 6, 30), 2010) == 30
    assert imdbwiki.age_at_photo(datetime.date(1980, 7, 1), 2010) == 29


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="imdb_crop.tar"):
        imdbwiki.read_imdbwiki(tmp_path / "imdb.mat")


def test_wrong_struct_rejected(tmp_path):
    savemat(tmp_path / "other.mat", {"faces": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="imdb or wiki"):
        imdbwiki.read_imdbwiki(tmp_path / "other.mat")
