"""Folders for datasets, caches, training runs and released weights.

Environment variables override the defaults:

- `SSR_DATA_DIR`: the folder that contains one sub-folder per dataset
  (`UTKFace/`, ...). Defaults to `data/` in the project root.
- `SSR_CACHE_DIR`: where prepared arrays are cached. Defaults to
  `data/cache/` in the project root, so a read-only `SSR_DATA_DIR` works.
- `SSR_RUNS_DIR`: where training runs write models and histories.
  Defaults to `runs/` in the project root.
- `SSR_PRETRAINED_DIR`: the authors' released weights, laid out as
  `<dataset>/<model>/<model>.h5` beside `<model>.json`. Defaults to
  `pretrained/` inside the datasets folder, or beside it if only that exists.
- `SSR_MEDIA_DIR`: photos and videos with real faces for the detection
  chapter and the demo. Defaults to `media/`, found the same way.

The project root is the nearest folder, from the working directory upwards,
that contains `_toc.yml`; notebooks run from `notebooks/` and still find it.
Outside a checkout, the working directory is used. Relative paths in the
variables are read from the project root.
"""

import os
from pathlib import Path


def project_root():
    """Return the nearest folder at or above the working directory with `_toc.yml`."""
    here = Path.cwd().resolve()
    for folder in [here, *here.parents]:
        if (folder / "_toc.yml").is_file():
            return folder
    return here


def _from_environment(variable):
    """Return the folder in `$variable`, a relative one taken from the project root."""
    value = os.environ.get(variable)
    if not value:
        return None
    # Notebooks run from notebooks/, so a path given relative to the
    # repository must not be read relative to the working directory.
    return (project_root() / Path(value).expanduser()).resolve()


def _folder(variable, default_name):
    return _from_environment(variable) or project_root() / default_name


def data_dir():
    """Return the datasets folder: `$SSR_DATA_DIR`, or `data/` in the project root."""
    return _folder("SSR_DATA_DIR", "data")


def cache_dir():
    """Return the cache folder: `$SSR_CACHE_DIR`, or `data/cache/` in the project root."""
    return _folder("SSR_CACHE_DIR", "data/cache")


def runs_dir():
    """Return the training runs folder: `$SSR_RUNS_DIR`, or `runs/` in the project root."""
    return _folder("SSR_RUNS_DIR", "runs")


def _inside_or_beside_data(variable, name):
    from_environment = _from_environment(variable)
    if from_environment:
        return from_environment
    inside = data_dir() / name
    beside = data_dir().parent / name
    if not inside.is_dir() and beside.is_dir():
        return beside
    return inside


def pretrained_dir():
    """Return the released weights folder.

    That is `$SSR_PRETRAINED_DIR` if set, else `pretrained/` inside
    `data_dir()`, else `pretrained/` beside `data_dir()` if only that exists.
    """
    return _inside_or_beside_data("SSR_PRETRAINED_DIR", "pretrained")


def media_dir():
    """Return the folder of example photos and videos.

    That is `$SSR_MEDIA_DIR` if set, else `media/` inside `data_dir()`, else
    `media/` beside `data_dir()` if only that exists.
    """
    return _inside_or_beside_data("SSR_MEDIA_DIR", "media")
