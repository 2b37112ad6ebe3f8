import pytest

from ssr_lib import config, pretrained


def test_pretrained_dir_inside_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SSR_PRETRAINED_DIR", raising=False)
    monkeypatch.setenv("SSR_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "pretrained").mkdir(parents=True)
    (tmp_path / "pretrained").mkdir()
    assert config.pretrained_dir() == tmp_path / "data" / "pretrained"


def test_pretrained_dir_beside_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SSR_PRETRAINED_DIR", raising=False)
    monkeypatch.setenv("SSR_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "pretrained").mkdir()
    assert config.pretrained_dir() == tmp_path / "pretrained"


def test_pretrained_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(tmp_path / "weights"))
    assert config.pretrained_dir() == tmp_path / "weights"


def test_missing_released_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="SSR_PRETRAINED_DIR"):
        pretrained.released_weights("imdb")


def test_project_root_found_from_notebooks(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: index\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("SSR_DATA_DIR", raising=False)
    assert config.data_dir() == tmp_path / "data"


def test_relative_data_dir_read_from_project_root(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: index\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("SSR_DATA_DIR", "../shared/data")
    assert config.data_dir() == (tmp_path / ".." / "shared" / "data").resolve()
