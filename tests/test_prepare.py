"""Preparing datasets into shards: counts, bad images, alignment, resume, command line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssr_lib import cli, data, prepare


def digest_folder(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def damaged_utkface(utkface_dir, tmp_path):
    """Twelve real UTKFace images, of which four are damaged the ways real crawls are."""
    folder = tmp_path / "UTKFace"
    names = [n for n in sorted(os.listdir(utkface_dir))
             if data.UTKFACE_PATTERN.match(n) and int(n.split("_")[0]) <= data.MAX_AGE][::500][:12]
    folder.mkdir()
    for name in names:
        shutil.copy(utkface_dir / name, folder / name)
    truncated, garbage, gray, png = names[:4]
    content = (folder / truncated).read_bytes()
    (folder / truncated).write_bytes(content[: len(content) // 2])
    (folder / garbage).write_bytes(b"not an image" * 50)
    image = cv2.imread(str(utkface_dir / gray))
    cv2.imwrite(str(folder / gray), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    # A PNG file behind a .jpg name still decodes: OpenCV reads the content, not the name.
    cv2.imwrite(str(folder / (png + ".png")), image)
    os.replace(folder / (png + ".png"), folder / png)
    return folder


def test_prepare_utkface_counts_every_file(utkface_dir, tmp_path):
    manifest, report = prepare.prepare("utkface", utkface_dir.parent, tmp_path / "out",
                                       workers=2, shard_size=3000, verbose=False)
    assert manifest["kept"] == report.kept == 20_690
    assert report.skipped == {
        "age above 100, outside the model's range": 18,
        "malformed file name (expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg)": 5,
    }
    assert manifest["skipped_images"] == {}
    assert len(manifest["shards"]) == 7
    arrays = prepare.load_prepared(tmp_path / "out")
    assert arrays["images"].shape == (20_690, 64, 64, 3)
    first = arrays["paths"][0]
    np.testing.assert_array_equal(arrays["images"][0], data.load_face(utkface_dir.parent / first))
    assert arrays["ages"][0] == int(first.split("/")[-1].split("_")[0])


def test_damaged_images_are_counted_and_raw_files_untouched(damaged_utkface, tmp_path):
    before = digest_folder(damaged_utkface)
    manifest, report = prepare.prepare("utkface", damaged_utkface, tmp_path / "out", workers=1, verbose=False)
    assert report.kept == 10
    assert report.skipped == {
        "truncated JPEG (no end-of-image marker)": 1,
        "unreadable image (OpenCV could not decode it)": 1,
    }
    assert manifest["grayscale_converted"] == 1
    assert digest_folder(damaged_utkface) == before
    images = prepare.load_prepared(tmp_path / "out")["images"]
    assert images.shape == (10, 64, 64, 3)


def test_interrupted_run_resumes_at_missing_shards(small_utkface, tmp_path):
    output = tmp_path / "out"
    first, _ = prepare.prepare("utkface", small_utkface, output, workers=1, shard_size=20, verbose=False)
    kept_shard = output / "shard-00000.npz"
    stamp = kept_shard.stat().st_mtime_ns
    # An interruption leaves a shard without its .json marker, and perhaps a partial file.
    (output / "shard-00002.json").unlink()
    (output / "shard-00002.partial.npz").write_bytes(b"half written")
    second, _ = prepare.prepare("utkface", small_utkface, output, workers=2, shard_size=20, verbose=False)
    assert kept_shard.stat().st_mtime_ns == stamp
    assert second["kept"] == first["kept"] == 60
    assert second["shards"] == first["shards"]


def test_other_settings_in_the_same_folder_raise(small_utkface, tmp_path):
    prepare.prepare("utkface", small_utkface, tmp_path / "out", workers=1, verbose=False)
    with pytest.raises(ValueError, match="settings.json.*method was 'resize', now 'align'"):
        prepare.prepare("utkface", small_utkface, tmp_path / "out", method="align", workers=1, verbose=False)


def test_align_detects_faces_in_photos(shared, tmp_path):
    """MORPH2-style names on real photos: every photo of one person gives one aligned face."""
    source = tmp_path / "morph2"
    source.mkdir()
    shutil.copy(shared / "media" / "obama.jpg", source / "000001_0M47.JPG")
    shutil.copy(shared / "media" / "biden.jpg", source / "000002_0M66.JPG")
    shutil.copy(shared / "media" / "two_people.jpg", source / "000003_0M50.JPG")
    (source / "000004_0F30.JPG").write_bytes(cv2.imencode(".jpg", np.full((200, 200, 3), 90, np.uint8))[1])
    manifest, report = prepare.prepare("morph2", source, tmp_path / "out", workers=1, verbose=False)
    assert report.kept == 3
    assert report.skipped == {"no face found by the dlib detector": 1}
    arrays = prepare.load_prepared(tmp_path / "out")
    assert list(arrays["identities"]) == ["000001", "000002", "000003"]
    assert list(arrays["ages"]) == [47, 66, 50]


def test_changed_source_or_limit_is_not_resumed(small_utkface, tmp_path):
    prepare.prepare("utkface", small_utkface, tmp_path / "out", workers=1, limit=20, verbose=False)
    with pytest.raises(ValueError, match="records was"):
        prepare.prepare("utkface", small_utkface, tmp_path / "out", workers=1, limit=40, verbose=False)
    other = shutil.copytree(small_utkface, tmp_path / "copy" / "UTKFace")
    with pytest.raises(ValueError, match="source was"):
        prepare.prepare("utkface", other, tmp_path / "out", workers=1, limit=20, verbose=False)


def test_limit_spreads_over_the_dataset(small_utkface, tmp_path):
    manifest, _ = prepare.prepare("utkface", small_utkface, tmp_path / "out", workers=1, limit=6, verbose=False)
    paths = list(prepare.load_prepared(tmp_path / "out")["paths"])
    names = sorted(os.listdir(small_utkface))
    assert paths == [names[i] for i in range(0, 60, 10)]


@pytest.mark.parametrize("arguments, message", [
    ({"workers": 0}, "workers must be at least 1"),
    ({"shard_size": 0}, "shard_size must be at least 1"),
])
def test_invalid_arguments_raise(small_utkface, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        prepare.prepare("utkface", small_utkface, tmp_path / "out", verbose=False, **arguments)
    assert not (tmp_path / "out").exists()


def test_source_file_and_output_file_are_named(shared, small_utkface, tmp_path):
    photo = shared / "media" / "obama.jpg"
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        prepare.prepare("utkface", photo, tmp_path / "out", verbose=False)
    with pytest.raises(ValueError, match="obama.jpg is a file"):
        prepare.prepare("utkface", small_utkface, photo, verbose=False)


def test_no_face_at_all_raises(tmp_path):
    source = tmp_path / "morph2"
    source.mkdir()
    (source / "000004_0F30.JPG").write_bytes(b"not a photo")
    with pytest.raises(ValueError, match="No face could be prepared"):
        prepare.prepare("morph2", source, tmp_path / "out", workers=1, verbose=False)


def test_load_prepared_without_manifest_says_how_to_resume(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest.json.*it resumes where it stopped"):
        prepare.load_prepared(tmp_path)


def test_cli_prepare_prints_the_report(small_utkface, tmp_path, capsys):
    status = cli.main(["prepare", "utkface", "--source", str(small_utkface), "--output", str(tmp_path / "out"),
                       "--workers", "1", "--json"])
    assert status == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["kept"] == 60
    assert manifest["settings"]["method"] == "resize"


def test_cli_prepare_missing_source_exits_2(tmp_path, capsys):
    status = cli.main(["prepare", "fgnet", "--source", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    assert status == 2
    assert "nowhere" in capsys.readouterr().err


def test_benchmark_prints_throughput_and_memory(utkface_dir):
    script = Path(__file__).parent.parent / "benchmarks" / "bench_prepare.py"
    result = subprocess.run([sys.executable, str(script), "--data-dir", str(utkface_dir.parent), "--records", "300",
                             "--sample", "200", "--align-sample", "0", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [row.get("workers") for row in rows] == [1, 2, None]
    assert rows[1]["ratio_to_1_worker"] > 0
    assert rows[2]["kept"] == 300
    assert rows[2]["bound_mb"] < 1024


def test_imdb_archive_layout_prepares_real_photos(shared, tmp_path):
    """imdb_crop.tar unpacks to imdb_crop/imdb_crop/; the kept rows point at real photos."""
    from test_imdbwiki import ROWS, write_mat

    root = tmp_path / "imdb_crop" / "imdb_crop"
    photos = {"01/a_1980-3-15_2010.jpg": "obama.jpg", "02/b_1980-9-1_2010.jpg": "biden.jpg",
              "12/l_1999-12-31_2000.jpg": "two_people.jpg"}
    for path, photo in photos.items():
        (root / path).parent.mkdir(parents=True)
        shutil.copy(shared / "media" / photo, root / path)
    write_mat(root / "imdb.mat", "imdb", ROWS)
    manifest, report = prepare.prepare("imdb", tmp_path / "imdb_crop", tmp_path / "out", workers=1, verbose=False)
    assert report.kept == 3
    assert sum(report.skipped.values()) == len(ROWS) - 3
    arrays = prepare.load_prepared(tmp_path / "out")
    assert sorted(arrays["paths"]) == sorted(f"imdb_crop/{path}" for path in photos)
    assert sorted(arrays["ages"]) == [0, 29, 30]


def test_train_on_prepared_morph2_keeps_people_apart(shared, tmp_path):
    """Ten 'people' (five photos and their mirror images), two photos each, named as in MORPH2."""
    source = tmp_path / "morph2"
    source.mkdir()
    photos = ["obama.jpg", "biden.jpg", "two_people.jpg", "TGOP_tvbs.png", "the_flash_cast.png"]
    pictures = [cv2.imread(str(shared / "media" / photo)) for photo in photos]
    pictures += [picture[:, ::-1] for picture in pictures]
    for person, picture in enumerate(pictures, start=1):
        for index in range(2):
            cv2.imwrite(str(source / f"{person:06d}_{index}M{40 + index}.JPG"), picture)
    prepare.prepare("morph2", source, tmp_path / "prepared", workers=1, verbose=False)
    splits = prepare.load_prepared_splits(tmp_path / "prepared", seed=0)
    people = {name: {p.split("_")[0] for p in split.files} for name, split in splits.items()}
    assert sum(len(split) for split in splits.values()) == 20
    assert not people["train"] & people["test"]
    assert not people["train"] & people["val"]
    assert not people["val"] & people["test"]

    result = subprocess.run([sys.executable, "-m", "ssr_lib", "train", "--prepared", str(tmp_path / "prepared"),
                             "--output", str(tmp_path / "run"), "--epochs", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_test"] == len(splits["test"])


def test_too_few_people_for_a_split_raise(shared, tmp_path):
    source = tmp_path / "morph2"
    source.mkdir()
    for index in range(3):
        shutil.copy(shared / "media" / "obama.jpg", source / f"000001_{index}M47.JPG")
    prepare.prepare("morph2", source, tmp_path / "prepared", workers=1, verbose=False)
    with pytest.raises(ValueError, match="split of .* is empty: 3 images \\(1 identities\\)"):
        prepare.load_prepared_splits(tmp_path / "prepared")
