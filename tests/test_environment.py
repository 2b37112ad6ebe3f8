import platform

import keras
import pytest

from ssr_lib import environment, pretrained

MODEL = pretrained.RELEASED_SSRNET


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty datasets folder, in which the kit also looks for the weights and media.

    The runs folder is empty too, because the session's own one contains the
    model that the book build trains.
    """
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SSR_DATA_DIR", str(folder))
    monkeypatch.setenv("SSR_RUNS_DIR", str(tmp_path / "runs"))
    for variable in ("SSR_PRETRAINED_DIR", "SSR_MEDIA_DIR", "SSR_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    return folder


def install_weights(pretrained_dir, datasets=pretrained.RELEASED_DATASETS):
    for dataset in datasets:
        folder = pretrained_dir / dataset / MODEL
        folder.mkdir(parents=True)
        (folder / f"{MODEL}.h5").write_bytes(b"")
        (folder / f"{MODEL}.json").write_text("{}")


def test_report_on_empty_data_dir(data_dir, capsys):
    environment.check_environment(needs=("utkface", "weights", "media", "run"))
    report = capsys.readouterr().out
    versions = f"Python {platform.python_version()}, Keras {keras.__version__}, backend "
    assert report.splitlines()[0].startswith(versions)
    assert f"UTKFace: missing, {data_dir} contains no UTKFace/ folder" in report
    assert f"tar -xzf UTKFace.tar.gz -C {data_dir}`" in report
    assert "released weights: missing" in report
    assert "-m ssr_lib download ssrnet-weights" in report
    assert "example media: missing" in report
    assert "trained model: missing" in report
    assert report.count("  To fix: ") == 4


def test_utkface_found_counts_images(data_dir):
    (data_dir / "UTKFace").mkdir()
    for name in ("26_1_0_20170116171048641.jpg.chip.jpg", "3_0_2_20161219140525218.jpg.chip.jpg"):
        (data_dir / "UTKFace" / name).write_bytes(b"")
    check = environment.check_utkface()
    assert check.found
    assert check.detail == f"2 images in {data_dir / 'UTKFace'}"


def test_utkface_folder_without_images(data_dir):
    (data_dir / "UTKFace").mkdir()
    (data_dir / "UTKFace" / "UTKFace.tar.gz").write_bytes(b"")
    check = environment.check_utkface()
    assert not check.found
    assert check.detail == f"{data_dir / 'UTKFace'} contains no .jpg files"


def test_utkface_missing_data_dir(data_dir, monkeypatch):
    missing = data_dir / "not-yet"
    monkeypatch.setenv("SSR_DATA_DIR", str(missing))
    check = environment.check_utkface()
    assert not check.found
    assert "does not exist" in check.detail
    assert f"mkdir -p {missing} && tar -xzf UTKFace.tar.gz -C {missing}" in check.fix


def test_weights_found(data_dir):
    install_weights(data_dir / "pretrained")
    check = environment.check_weights()
    assert check.found
    assert str(data_dir / "pretrained") in check.detail


def test_weights_missing_one_dataset(data_dir):
    install_weights(data_dir / "pretrained", datasets=("imdb", "wiki"))
    (data_dir / "pretrained" / "wiki" / MODEL / f"{MODEL}.json").unlink()
    check = environment.check_weights()
    assert not check.found
    assert "of wiki, morph2 not found" in check.detail
    assert f"installs them into {data_dir / 'pretrained'}" in check.fix


def test_weights_fix_names_pretrained_variable(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(tmp_path / "weights"))
    check = environment.check_weights()
    assert not check.found
    assert f"into {tmp_path / 'weights'}, the folder that SSR_PRETRAINED_DIR names" in check.fix


def test_media_missing_names_each_source(data_dir):
    media = data_dir / "media"
    media.mkdir()
    for name in ("obama.jpg", "biden.jpg", "two_people.jpg", "short_hamilton_clip.mp4"):
        (media / name).write_bytes(b"")
    check = environment.check_media()
    assert not check.found
    assert check.detail == f"TGOP_tvbs.png, the_flash_cast.png not found in {media}"
    assert "the demo/ folder of https://github.com/shamangary/SSR-Net" in check.fix
    assert "face_recognition" not in check.fix


def test_media_found_beside_data_dir(data_dir):
    media = data_dir.parent / "media"
    media.mkdir()
    for name in environment.MEDIA_FILES:
        (media / name).write_bytes(b"")
    assert environment.check_media().found


def test_run_follows_profile(data_dir, monkeypatch):
    monkeypatch.setenv("SSR_PROFILE", "full")
    check = environment.check_run()
    assert not check.found
    assert "--profile full" in check.fix
    path = environment.trained_model_path()
    assert path.parent.name == "utkface-full"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert environment.check_run().found


def test_optional_need_reported_as_optional(data_dir, capsys):
    environment.check_environment(needs=("utkface",), optional=("run",))
    report = capsys.readouterr().out
    assert "trained model: missing (optional)" in report
    assert "UTKFace: missing," in report


def test_widgets_found():
    check = environment.check_widgets()
    assert check.found
    assert check.detail.startswith("ipywidgets ")


def test_unknown_need_rejected():
    with pytest.raises(ValueError, match="Received: 'utk'"):
        environment.run_checks(needs=("utk",))
