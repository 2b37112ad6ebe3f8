"""Shared fixtures: the real data under $SSR_SHARED_DIR, and small folders built from it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssr_lib.data import UTKFACE_PATTERN

ROOT = Path(__file__).resolve().parents[1]

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


def private_folders(tmp_path_factory):
    """Return the environment variables that name the session's cache and runs folders."""
    base = tmp_path_factory.getbasetemp()
    return {"SSR_CACHE_DIR": str(base / "cache"), "SSR_RUNS_DIR": str(base / "runs")}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Give every test one session-wide cache and runs folder outside the repository."""
    for name, value in private_folders(tmp_path_factory).items():
        monkeypatch.setenv(name, value)


def pytest_collection_modifyitems(items):
    """Mark every test that uses the built book as `book`, so `-m "not book"` never builds it."""
    for item in items:
        if "built_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.book)


@pytest.fixture(scope="session")
def built_book(shared, tmp_path_factory):
    """Build the book once per session with `jupyter-book build -W`, and return its html folder.

    The build trains the quick profile into the session's runs folder, which
    `private_cache` also gives to each test. This fixture runs before that
    function-scoped one, so it passes the same folders to the build itself.
    """
    output = tmp_path_factory.mktemp("book")
    env = dict(
        os.environ,
        SSR_DATA_DIR=str(shared / "data"),
        SSR_PRETRAINED_DIR=str(shared / "pretrained"),
        **private_folders(tmp_path_factory),
    )
    build = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT),
         "--path-output", str(output), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, env=env,
    )
    assert build.returncode == 0, build.stdout[-6000:] + build.stderr[-6000:]

    html = output / "_build" / "html"
    assert (html / "index.html").is_file()
    return html


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
