import shutil

import numpy as np
import pytest

from ssr_lib import data


def test_split_is_deterministic_and_disjoint():
    first = data.split_indices(1000, seed=3)
    second = data.split_indices(1000, seed=3)
    for name in data.SPLITS:
        np.testing.assert_array_equal(first[name], second[name])
    combined = np.concatenate([first[name] for name in data.SPLITS])
    assert sorted(combined) == list(range(1000))
    assert [len(first[name]) for name in data.SPLITS] == [800, 100, 100]


def test_split_changes_with_seed():
    assert not np.array_equal(data.split_indices(1000, seed=0)["test"], data.split_indices(1000, seed=1)["test"])


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        data.split_indices(10, fractions=(0.5, 0.2, 0.2))


def test_missing_folder_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="does not exist.*UTKFace.tar.gz"):
        data.prepare_utkface(tmp_path / "nowhere")


def test_empty_folder_message(tmp_path):
    (tmp_path / "UTKFace").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="contains no .jpg files.*SSR_DATA_DIR"):
        data.prepare_utkface(tmp_path)


def test_reads_real_faces_as_rgb_uint8(small_utkface):
    arrays, report = data.prepare_utkface(small_utkface.parent, verbose=False)
    assert arrays["images"].shape == (60, 64, 64, 3)
    assert arrays["images"].dtype == np.uint8
    assert report.kept == 60
    assert report.total_skipped == 0
    first = small_utkface / arrays["files"][0]
    np.testing.assert_array_equal(arrays["images"][0], data.load_face(first))
    assert arrays["ages"][0] == int(first.name.split("_")[0])


def test_malformed_names_and_old_ages_counted(small_utkface):
    source = sorted(small_utkface.iterdir())[0]
    shutil.copy(source, small_utkface / "39_1_20170116174525125.jpg.chip.jpg")  # race missing
    shutil.copy(source, small_utkface / "24_0_1_20170116220224657 .jpg.chip.jpg")  # stray space
    shutil.copy(source, small_utkface / "105_1_0_20170112213001988.jpg.chip.jpg")
    records, report = data.read_utkface(small_utkface)
    assert len(records) == 60
    assert report.total_skipped == 3
    malformed = [r for r in report.skipped if r.startswith("malformed")]
    assert report.skipped[malformed[0]] == 2
    assert "105_1_0_20170112213001988.jpg.chip.jpg" in report.examples.values()


def test_unreadable_image_counted(small_utkface):
    (small_utkface / "30_0_0_20170117000000000.jpg.chip.jpg").write_bytes(b"not a jpeg")
    arrays, report = data.prepare_utkface(small_utkface, verbose=False)
    assert len(arrays["ages"]) == 60
    assert report.skipped["unreadable image (OpenCV could not decode it)"] == 1
    assert "30_0_0_20170117000000000.jpg.chip.jpg" in str(report)


def test_cache_is_reused_with_its_report(small_utkface, monkeypatch):
    (small_utkface / "bad_name.jpg").write_bytes(b"")
    first, first_report = data.prepare_utkface(small_utkface, verbose=False)

    def fail(*args, **kwargs):
        raise AssertionError("images decoded again despite the cache")

    monkeypatch.setattr(data, "_read_images", fail)
    second, second_report = data.prepare_utkface(small_utkface, verbose=False)
    np.testing.assert_array_equal(first["images"], second["images"])
    assert str(first_report) == str(second_report)


def test_full_utkface_counts(utkface_dir):
    records, report = data.read_utkface(utkface_dir)
    assert report.kept + report.total_skipped == sum(1 for p in utkface_dir.iterdir() if p.name.endswith(".jpg"))
    assert report.total_skipped < 100
    splits = data.load_utkface(utkface_dir.parent, verbose=False)
    sizes = [len(splits[name]) for name in data.SPLITS]
    assert sum(sizes) == report.kept
    assert not set(splits["train"].files) & set(splits["test"].files)
