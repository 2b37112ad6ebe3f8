"""Shared fixtures: the real data under $SSR_SHARED_DIR, and small folders built from it."""

import os
import shutil
from pathlib import Path

import pytest

from ssr_lib.data import UTKFACE_PATTERN

SHARED_HINT = (
    "set SSR_SHARED_DIR to the folder with data/UTKFace, pretrained/ and media/ "
    "(.ci/run sets it to ../shared)"
)


def shared_dir():
    value = os.environ.get("SSR_SHARED_DIR")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def shared():
    folder = shared_dir()
    if folder is None or not (folder / "data" / "UTKFace").is_dir():
        pytest.skip(f"real data not available: {SHARED_HINT}")
    return folder


@pytest.fixture(scope="session")
def utkface_dir(shared):
    return shared / "data" / "UTKFace"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Give every test one session-wide cache and runs folder outside the repository."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("SSR_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("SSR_RUNS_DIR", str(base / "runs"))


def copy_utkface(source, folder, count, step):
    """Copy every `step`-th valid UTKFace image of age 0..100 from `source`, `count` in all."""
    folder.mkdir()
    names = [n for n in sorted(os.listdir(source)) if UTKFACE_PATTERN.match(n)]
    for name in [n for n in names if int(n.split("_")[0]) <= 100][::step][:count]:
        shutil.copy(source / name, folder / name)
    return folder


@pytest.fixture
def small_utkface(utkface_dir, tmp_path):
    """A folder with 60 real UTKFace images, named as in the published set."""
    return copy_utkface(utkface_dir, tmp_path / "UTKFace", count=60, step=300)
