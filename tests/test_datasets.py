"""Dataset readers, each run on a small fixture in the dataset's published layout."""

import os

import cv2
import numpy as np
import pytest

from ssr_lib import data, datasets
from ssr_lib.data import DatasetNotFoundError


def write_jpeg(path):
    """Write a tiny real JPEG file at `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8, 3), 128, np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def landmark_values(offset):
    """136 numbers `x0 y0 ... x67 y67` with x = offset + i and y = offset + 100 + i."""
    return [v for i in range(68) for v in (offset + i, offset + 100 + i)]


def pts_text(points):
    """Text of an FG-NET `.pts` file with the given `(x, y)` points."""
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x} {y}" for x, y in points]
    return "\n".join(lines + ["}"]) + "\n"


POINTS_68 = [(10.5 + i, 200.25 - i) for i in range(68)]


def test_readers_registered():
    for name in ("morph2", "fgnet", "megaage-asian", "utkface-wild"):
        assert name in datasets.READERS
    assert datasets.READERS["morph2"] is datasets.read_morph2
    assert datasets.READERS["utkface-wild"] is datasets.read_utkface_wild


# MORPH album 2

MORPH2_FILES = [
    "009055_1M54.JPG",  # kept: subject 009055, photo 1, male, 54
    "009055_2M55.JPG",  # kept
    "273546_01F22.JPG",  # kept: two-digit photo index, female
    "115931_21M39.JPG",  # kept
    "000001_1M20.jpg",  # kept: lowercase extension
    "123456_0M101.JPG",  # age above 100
    "notes.JPG",  # malformed
    "009055_3X54.JPG",  # malformed: unknown gender letter
]


@pytest.fixture
def morph2(tmp_path):
    for name in MORPH2_FILES:
        write_jpeg(tmp_path / name)
    (tmp_path / "readme.txt").write_text("not an image\n")
    return tmp_path


def test_morph2_kept_records(morph2):
    records, report = datasets.read_morph2(morph2)
    assert [r.path for r in records] == [
        "000001_1M20.jpg", "009055_1M54.JPG", "009055_2M55.JPG",
        "115931_21M39.JPG", "273546_01F22.JPG",
    ]
    assert [r.age for r in records] == [20, 54, 55, 39, 22]
    assert [r.gender for r in records] == [1, 1, 1, 1, 0]
    assert [r.identity for r in records] == ["000001", "009055", "009055", "115931", "273546"]
    assert all(r.face_box is None and r.landmarks is None for r in records)
    assert report.kept == 5


def test_morph2_skip_counts(morph2):
    _, report = datasets.read_morph2(morph2)
    assert dict(report.skipped) == {
        "malformed file name (expected SUBJECT_PHOTO{M|F}AGE.JPG)": 2,
        datasets.AGE_ABOVE_MAX: 1,
    }
    assert report.examples[datasets.AGE_ABOVE_MAX] == "123456_0M101.JPG"
    assert report.dataset == "MORPH2"


def test_morph2_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="FaceAgingGroup") as error:
        datasets.read_morph2(tmp_path / "morph2")
    assert str(tmp_path / "morph2") in str(error.value)


def test_morph2_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images\n")
    with pytest.raises(DatasetNotFoundError, match="contains no .JPG files"):
        datasets.read_morph2(tmp_path)


# FG-NET


@pytest.fixture
def fgnet(tmp_path):
    """FG-NET as FGNET.zip unpacks: FGNET/images/*.JPG and FGNET/points/*.pts."""
    root = tmp_path / "FGNET"
    kept_names = ["001A02.JPG", "001A05.JPG", "010A07a.JPG", "010a07b.JPG"]
    for name in kept_names + ["1A02.JPG", "002A101.JPG"]:  # malformed name, age 101
        write_jpeg(root / "images" / name)
    points = root / "points"
    points.mkdir()
    (points / "001a02.pts").write_text(pts_text(POINTS_68))
    (points / "010a07a.pts").write_text(pts_text(POINTS_68))
    (points / "010a07b.pts").write_text(pts_text(POINTS_68[:60]))  # 60 points: unreadable
    (points / "099a01.pts").write_text(pts_text(POINTS_68))  # no image
    return tmp_path


def test_fgnet_kept_records(fgnet):
    records, report = datasets.read_fgnet(fgnet)
    assert [r.path for r in records] == [
        "FGNET/images/001A02.JPG", "FGNET/images/001A05.JPG",
        "FGNET/images/010A07a.JPG", "FGNET/images/010a07b.JPG",
    ]
    assert [r.age for r in records] == [2, 5, 7, 7]
    assert [r.identity for r in records] == ["001", "001", "010", "010"]
    assert [r.gender for r in records] == [-1, -1, -1, -1]
    assert report.kept == 4


def test_fgnet_landmarks_attached(fgnet):
    records, _ = datasets.read_fgnet(fgnet)
    by_path = {r.path: r for r in records}
    landmarks = by_path["FGNET/images/001A02.JPG"].landmarks
    assert len(landmarks) == 68
    assert landmarks[0] == (10.5, 200.25)
    assert landmarks[67] == (77.5, 133.25)
    assert by_path["FGNET/images/010A07a.JPG"].landmarks == landmarks
    assert by_path["FGNET/images/001A05.JPG"].landmarks is None  # no .pts file
    assert by_path["FGNET/images/010a07b.JPG"].landmarks is None  # unreadable .pts file


def test_fgnet_skip_counts(fgnet):
    _, report = datasets.read_fgnet(fgnet)
    unreadable = "unreadable landmark file (image kept without landmarks)"
    assert dict(report.skipped) == {
        "malformed file name (expected SSSAaa.JPG, e.g. 001A02.JPG)": 1,
        datasets.AGE_ABOVE_MAX: 1,
        unreadable: 1,
        "landmark file without an image": 1,
    }
    assert report.examples[unreadable] == "FGNET/points/010a07b.pts"
    assert report.examples["landmark file without an image"] == "FGNET/points/099a01.pts"


def test_fgnet_source_is_archive_folder(fgnet):
    records, _ = datasets.read_fgnet(fgnet / "FGNET")
    assert records[0].path == "images/001A02.JPG"
    assert records[0].landmarks is not None


def test_fgnet_without_points_folder(tmp_path):
    write_jpeg(tmp_path / "images" / "001A02.JPG")
    records, report = datasets.read_fgnet(tmp_path)
    assert records[0].landmarks is None
    assert report.total_skipped == 0


def test_fgnet_missing_images_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="FG-NET Aging Database") as error:
        datasets.read_fgnet(tmp_path)
    assert str(tmp_path / "images") in str(error.value)


def test_pts_reads_valid_file(tmp_path):
    path = tmp_path / "001a02.pts"
    path.write_text(pts_text(POINTS_68).replace("\n", "\r\n"))
    assert datasets.read_pts(path) == tuple(POINTS_68)


@pytest.mark.parametrize("text", [
    pts_text(POINTS_68[:67]),  # 67 points
    pts_text(POINTS_68).replace("n_points: 68", "n_points: 67"),  # header disagrees
    pts_text(POINTS_68).replace("{\n", ""),  # no opening brace
    pts_text(POINTS_68).replace("}\n", ""),  # no closing brace
    pts_text(POINTS_68).replace("10.5 200.25", "10.5 abc"),  # not a number
    pts_text(POINTS_68).replace("10.5 200.25", "10.5 200.25 3"),  # three values
    pts_text(POINTS_68).replace("version: 1\n", ""),  # no version line
    "",
])
def test_pts_rejects_malformed_file(tmp_path, text):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    assert datasets.read_pts(path) is None


def test_pts_rejects_binary_file(tmp_path):
    path = tmp_path / "bad.pts"
    path.write_bytes(b"\xff\xfe\x00\x80")
    assert datasets.read_pts(path) is None


# MegaAge-Asian


@pytest.fixture
def megaage(tmp_path):
    """MegaAge-Asian as its archive unpacks: megaage_asian/{train,test,list}/."""
    root = tmp_path / "megaage_asian"
    for name in ["1.jpg", "2.jpg", "3.jpg", "5.jpg"]:
        write_jpeg(root / "train" / name)
    for name in ["1.jpg", "2.jpg"]:
        write_jpeg(root / "test" / name)
    lists = root / "list"
    lists.mkdir()
    # 1: kept, 2: kept ("35.0"), 3: age 101, 4: image missing, 5: invalid age, 6: no age line
    (lists / "train_name.txt").write_text("1.jpg\n2.jpg\n3.jpg\n4.jpg\n5.jpg\n6.jpg\n")
    (lists / "train_age.txt").write_text("23\n35.0\n101\n40\nabc\n\n")
    # test 1 and 2 kept, and the third age has no name
    (lists / "test_name.txt").write_text("1.jpg\r\n2.jpg\r\n")
    (lists / "test_age.txt").write_text("0\r\n70\r\n12\r\n")
    return tmp_path


def test_megaage_kept_records(megaage):
    records, report = datasets.read_megaage_asian(megaage)
    assert [r.path for r in records] == [
        "megaage_asian/test/1.jpg", "megaage_asian/test/2.jpg",
        "megaage_asian/train/1.jpg", "megaage_asian/train/2.jpg",
    ]
    assert [r.age for r in records] == [0, 70, 23, 35]
    assert all(r.gender == -1 and r.identity == "" for r in records)
    assert report.kept == 4


def test_megaage_skip_counts(megaage):
    _, report = datasets.read_megaage_asian(megaage)
    no_age = "name without an age (train_name.txt is longer than train_age.txt)"
    no_name = "age without a name (test_age.txt is longer than test_name.txt)"
    assert dict(report.skipped) == {
        no_age: 1,
        no_name: 1,
        "image listed but missing": 1,
        "invalid age (expected a whole number of years)": 1,
        datasets.AGE_ABOVE_MAX: 1,
    }
    assert report.examples["image listed but missing"] == "train/4.jpg"
    assert report.examples[no_age] == "train/6.jpg"
    assert report.examples[no_name] == "megaage_asian/list/test_age.txt line 3"


def test_megaage_single_part(megaage):
    train, train_report = datasets.read_megaage_asian(megaage, part="train")
    test, test_report = datasets.read_megaage_asian(megaage, part="test")
    assert [r.path for r in train] == ["megaage_asian/train/1.jpg", "megaage_asian/train/2.jpg"]
    assert [r.path for r in test] == ["megaage_asian/test/1.jpg", "megaage_asian/test/2.jpg"]
    assert train_report.total_skipped == 4
    assert test_report.total_skipped == 1


def test_megaage_source_is_archive_folder(megaage):
    records, _ = datasets.read_megaage_asian(megaage / "megaage_asian", part="test")
    assert [r.path for r in records] == ["test/1.jpg", "test/2.jpg"]


def test_megaage_invalid_part(megaage):
    with pytest.raises(ValueError, match="part='val'"):
        datasets.read_megaage_asian(megaage, part="val")


def test_megaage_missing_list_file(megaage):
    age_file = megaage / "megaage_asian" / "list" / "test_age.txt"
    age_file.unlink()
    with pytest.raises(DatasetNotFoundError, match="MegaAge project page") as error:
        datasets.read_megaage_asian(megaage)
    assert str(age_file) in str(error.value)
    records, _ = datasets.read_megaage_asian(megaage, part="train")
    assert len(records) == 2


def test_megaage_missing_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        datasets.read_megaage_asian(tmp_path / "nowhere")


# UTKFace in-the-wild faces


def landmark_line(name, offset):
    """One line as `landmark_list_partN.txt` writes it: the name, 136 numbers, a trailing space."""
    return name + " " + " ".join(str(v) for v in landmark_values(offset)) + " \n"


@pytest.fixture
def utkface_wild(tmp_path):
    """part1/ and part2/ with their landmark lists, but no part3/."""
    for name in [
        "25_0_1_20170116174525125.jpg",  # kept, male, landmarks
        "30_1_0_20170103183413234.jpg",  # kept, female, no landmark line
        "45_1_2_20170104000000000.jpg",  # kept, malformed landmark line
        "39_1_20170116174525125.jpg",  # malformed name: no race field
        "110_0_0_20170112213500903.jpg",  # age above 100
    ]:
        write_jpeg(tmp_path / "part1" / name)
    write_jpeg(tmp_path / "part2" / "5_1_3_20170109150557335.jpg")  # kept, female, landmarks
    (tmp_path / "landmark_list_part1.txt").write_text(
        landmark_line("25_0_1_20170116174525125.jpg", 0)
        + landmark_line("39_1_20170116174525125.jpg", 0)  # used by no record, not counted
        + landmark_line("99_0_0_20170101000000000.jpg", 0)  # no image
        + "45_1_2_20170104000000000.jpg 1 2 3 \n"  # too few numbers
    )
    (tmp_path / "landmark_list_part2.txt").write_text(
        landmark_line("5_1_3_20170109150557335.jpg", 1000)
        + landmark_line("5_1_3_20170109150557335.jpg", 2000)  # duplicate
    )
    return tmp_path


def test_utkface_wild_kept_records(utkface_wild):
    records, report = datasets.read_utkface_wild(utkface_wild)
    assert [r.path for r in records] == [
        "part1/25_0_1_20170116174525125.jpg", "part1/30_1_0_20170103183413234.jpg",
        "part1/45_1_2_20170104000000000.jpg", "part2/5_1_3_20170109150557335.jpg",
    ]
    assert [r.age for r in records] == [25, 30, 45, 5]
    assert [r.gender for r in records] == [1, 0, 0, 0]  # UTKFace 0 = male becomes 1
    assert all(r.identity == "" and r.face_box is None for r in records)
    assert report.kept == 4


def test_utkface_wild_landmarks_attached(utkface_wild):
    records, _ = datasets.read_utkface_wild(utkface_wild)
    first, second, third, fourth = (r.landmarks for r in records)
    assert len(first) == 68
    assert first[0] == (0.0, 100.0)
    assert first[67] == (67.0, 167.0)
    assert second is None
    assert third is None
    assert fourth[0] == (1000.0, 1100.0)  # the first of the two duplicate lines


def test_utkface_wild_skip_counts(utkface_wild):
    _, report = datasets.read_utkface_wild(utkface_wild)
    malformed = "malformed landmark line (expected a name and 136 numbers)"
    duplicate = "duplicate landmark line (the first one is used)"
    orphan = "landmark line without an image"
    assert dict(report.skipped) == {
        "malformed file name (expected AGE_GENDER_RACE_DATETIME.jpg)": 1,
        datasets.AGE_ABOVE_MAX: 1,
        malformed: 1,
        duplicate: 1,
        orphan: 1,
    }
    assert report.examples[malformed] == "landmark_list_part1.txt line 4"
    assert report.examples[orphan] == "landmark_list_part1.txt: 99_0_0_20170101000000000.jpg"
    assert report.examples[duplicate] == "landmark_list_part2.txt line 2"


def test_utkface_wild_without_landmark_lists(utkface_wild):
    (utkface_wild / "landmark_list_part1.txt").unlink()
    (utkface_wild / "landmark_list_part2.txt").unlink()
    records, report = datasets.read_utkface_wild(utkface_wild)
    assert len(records) == 4
    assert all(r.landmarks is None for r in records)
    assert report.total_skipped == 2


def test_utkface_wild_missing_parts(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="UTKFace project page") as error:
        datasets.read_utkface_wild(tmp_path)
    assert str(tmp_path) in str(error.value)


# group_split


@pytest.fixture(scope="module")
def identities():
    """200 identities with 1 to 10 images each plus 20 records without identity, shuffled."""
    rng = np.random.default_rng(7)
    names = [f"person{i:03d}" for i in range(200) for _ in range(rng.integers(1, 11))]
    names += [""] * 20
    return [names[i] for i in rng.permutation(len(names))]


def test_group_split_identities_disjoint(identities):
    split = datasets.group_split(identities, seed=0)
    sides = {name: {identities[i] for i in idx if identities[i]} for name, idx in split.items()}
    assert not sides["train"] & sides["val"]
    assert not sides["train"] & sides["test"]
    assert not sides["val"] & sides["test"]


def test_group_split_uses_each_index_once(identities):
    split = datasets.group_split(identities, seed=0)
    combined = np.concatenate([split["train"], split["val"], split["test"]])
    assert np.array_equal(np.sort(combined), np.arange(len(identities)))


def test_group_split_format_matches_split_indices(identities):
    split = datasets.group_split(identities, seed=0)
    reference = data.split_indices(len(identities), seed=0)
    assert list(split) == list(reference)
    for name, idx in split.items():
        assert idx.dtype.kind == "i"
        assert np.all(np.diff(idx) > 0)


def test_group_split_deterministic_for_seed(identities):
    first = datasets.group_split(identities, seed=3)
    second = datasets.group_split(identities, seed=3)
    other = datasets.group_split(identities, seed=4)
    for name in first:
        assert np.array_equal(first[name], second[name])
    assert not np.array_equal(first["train"], other["train"])


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0)])
def test_group_split_sizes_near_fractions(identities, fractions):
    n = len(identities)
    split = datasets.group_split(identities, seed=1, fractions=fractions)
    # Each cut is off by at most half of the largest identity (5 images).
    # Train and test have one cut each, validation has two.
    for name, fraction, tolerance in zip(data.SPLITS, fractions, (5, 10, 5)):
        size = len(split[name])
        assert abs(size - fraction * n) <= tolerance, (name, size, fraction * n)


def test_group_split_empty_identities_split_alone():
    split = datasets.group_split([""] * 10, seed=0)
    assert [len(split[name]) for name in data.SPLITS] == [8, 1, 1]


@pytest.mark.parametrize("seed", range(6))
def test_group_split_straddling_identity_follows_middle(seed):
    # 10 images, cut at 5. Whichever order the shuffle gives, the 8-image
    # identity has its middle on one side of the cut and the 2-image identity
    # lies on the other side.
    identities = ["a"] * 2 + ["b"] * 8
    split = datasets.group_split(identities, seed=seed, fractions=(0.5, 0.5, 0.0))
    assert sorted(len(idx) for idx in split.values()) == [0, 2, 8]
    assert len(split["test"]) == 0


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.1, -0.1, 0.0)])
def test_group_split_invalid_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        datasets.group_split(["a", "b"], fractions=fractions)


def test_duplicate_groups_find_copies_of_real_faces(small_utkface):
    names = sorted(os.listdir(small_utkface))[:30]
    images = [data.load_face(small_utkface / name) for name in names]
    brighter = np.clip(images[3].astype(int) + 10, 0, 255).astype(np.uint8)
    resampled = cv2.resize(cv2.resize(images[7], (50, 50)), (64, 64))
    identities = datasets.duplicate_groups(np.stack(images + [brighter, resampled]))
    assert identities[3] == identities[30] != ""
    assert identities[7] == identities[31] != ""
    assert identities[3] != identities[7]
    assert [identities[i] for i in range(30) if i not in (3, 7)] == [""] * 28
