"""Check that a notebook's software, datasets, weights and media are in place.

Each notebook's first code cell calls `check_environment` with what that
notebook reads, so a reader sees at once what is missing and the command that
fixes it, instead of a traceback several cells later. Nothing here raises
when something is missing, because the report lists it instead.

The things a notebook can need, as accepted by `needs` and `optional`:

- `"utkface"`: UTKFace's aligned and cropped faces in `config.data_dir()`.
- `"weights"`: the authors' released SSR-Net(3,3,3) weights for every
  dataset in `pretrained.RELEASED_DATASETS`, in `config.pretrained_dir()`.
- `"media"`: the example photos and the video clip, in `config.media_dir()`.
- `"run"`: the model that notebook 05 trains, in `config.runs_dir()`.
- `"widgets"`: ipywidgets and anywidget, for the explorer, player and webcam.
"""

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from ssr_lib import config

NEEDS = ("utkface", "weights", "media", "run", "widgets")

UTKFACE_URL = "https://susanqq.github.io/UTKFace/"
WEIGHTS_REPOSITORY = "https://github.com/shamangary/SSR-Net"
MEDIA_REPOSITORY = "https://github.com/ageitgey/face_recognition"

# Example media, each with where it comes from. The first four are in the
# examples/ folder of the face_recognition project, the last two in the demo/
# folder of the SSR-Net repository.
MEDIA_FILES = {
    "obama.jpg": MEDIA_REPOSITORY,
    "biden.jpg": MEDIA_REPOSITORY,
    "two_people.jpg": MEDIA_REPOSITORY,
    "short_hamilton_clip.mp4": MEDIA_REPOSITORY,
    "TGOP_tvbs.png": WEIGHTS_REPOSITORY,
    "the_flash_cast.png": WEIGHTS_REPOSITORY,
}

WIDGET_PACKAGES = ("ipywidgets", "anywidget")


@dataclass(frozen=True)
class Check:
    """The result of checking one need: what was found, and how to fix it if missing."""

    name: str
    found: bool
    detail: str
    fix: str = ""
    optional: bool = False

    @property
    def status(self):
        """The word the report prints: found, missing, or missing (optional)."""
        if self.found:
            return "found"
        return "missing (optional)" if self.optional else "missing"


def python_command():
    """Return the command that runs this Python, relative to the project root if inside it."""
    # Not `resolve()`: a virtual environment's python is a link to the system one.
    executable = Path(os.path.abspath(sys.executable))
    try:
        return str(executable.relative_to(config.project_root()))
    except ValueError:
        return "python"


def describe_software():
    """Return one line with the Python, Keras and backend versions and the GPUs found."""
    line = f"Python {platform.python_version()}"
    try:
        import keras
    except ImportError as error:
        return (
            f"{line}. Keras cannot be imported ({error}): run "
            f"`{python_command()} -m pip install -e .` in the repository root."
        )
    backend = keras.backend.backend()
    line += f", Keras {keras.__version__}, backend {backend} {_package_version(backend)}"
    return f"{line} ({_describe_gpus(backend)})"


def _package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _describe_gpus(backend):
    if backend == "tensorflow":
        import tensorflow as tf

        count = len(tf.config.list_physical_devices("GPU"))
    elif backend == "torch":
        import torch

        count = torch.cuda.device_count()
    elif backend == "jax":
        import jax

        count = sum(device.platform == "gpu" for device in jax.devices())
    else:
        return "runs on the CPU"
    if count == 0:
        return "no GPU found, runs on the CPU"
    return "1 GPU found" if count == 1 else f"{count} GPUs found"


def check_utkface():
    """Check that `config.data_dir()` contains UTKFace's images."""
    from ssr_lib import data

    data_dir = config.data_dir()
    utkface = data_dir / data.UTKFACE_FOLDER
    # Like `data.find_utkface`, accept the image folder itself as the data folder.
    folder = utkface if utkface.is_dir() else data_dir
    images = _count_jpg_files(folder)
    if images:
        return Check("UTKFace", True, f"{images:,} images in {folder}")
    if utkface.is_dir():
        detail = f"{utkface} contains no .jpg files"
    elif data_dir.is_dir():
        detail = f"{data_dir} contains no {data.UTKFACE_FOLDER}/ folder"
    else:
        detail = f"the data folder {data_dir} does not exist"
    unpack = f"tar -xzf UTKFace.tar.gz -C {data_dir}"
    if not data_dir.is_dir():
        unpack = f"mkdir -p {data_dir} && {unpack}"
    fix = (
        f"download 'Aligned&Cropped Faces' (UTKFace.tar.gz) from {UTKFACE_URL} and run "
        f"`{unpack}`, or set SSR_DATA_DIR to the folder that contains UTKFace/."
    )
    return Check("UTKFace", False, detail, fix)


def _count_jpg_files(folder):
    """Return the number of `.jpg` files in `folder`, 0 if it is missing or cannot be read."""
    try:
        return sum(1 for name in os.listdir(folder) if name.endswith(".jpg"))
    except OSError:
        return 0


def check_weights():
    """Check that the released SSR-Net(3,3,3) weights of every dataset are in place."""
    from ssr_lib import pretrained

    folder = config.pretrained_dir()
    model = pretrained.RELEASED_SSRNET
    missing = [
        dataset
        for dataset in pretrained.RELEASED_DATASETS
        if not (folder / dataset / model / f"{model}.h5").is_file()
        or not (folder / dataset / model / f"{model}.json").is_file()
    ]
    if not missing:
        found = ", ".join(pretrained.RELEASED_DATASETS)
        return Check("released weights", True, f"{found} in {folder}")
    installed = config.data_dir() / "pretrained"
    download = f"`{python_command()} -m ssr_lib download ssrnet-weights` in the repository root"
    copy = (
        f"copy the imdb/, wiki/ and morph2/ folders of the pre-trained models folder of "
        f"{WEIGHTS_REPOSITORY} into {folder}"
    )
    if os.environ.get("SSR_PRETRAINED_DIR"):
        fix = (
            f"{copy}, the folder that SSR_PRETRAINED_DIR names. Running {download} "
            f"installs them into {installed}, from where they can be copied."
        )
    else:
        fix = f"run {download}, which installs them into {installed}, or {copy}."
    detail = f"{model}.h5 and .json of {', '.join(missing)} not found under {folder}"
    return Check("released weights", False, detail, fix)


def check_media():
    """Check that the example photos and the video clip are in `config.media_dir()`."""
    folder = config.media_dir()
    missing = [name for name in MEDIA_FILES if not (folder / name).is_file()]
    if not missing:
        return Check("example media", True, f"all {len(MEDIA_FILES)} files in {folder}")
    sources = []
    for repository, folder_name in ((MEDIA_REPOSITORY, "examples/"), (WEIGHTS_REPOSITORY, "demo/")):
        names = [name for name in missing if MEDIA_FILES[name] == repository]
        if names:
            sources.append(f"{', '.join(names)} (in the {folder_name} folder of {repository})")
    fix = (
        f"put {' and '.join(sources)} into {folder}, "
        "or set SSR_MEDIA_DIR to a folder that has them."
    )
    return Check("example media", False, f"{', '.join(missing)} not found in {folder}", fix)


def trained_model_path():
    """Return where notebook 05 saves its model, for the profile in `$SSR_PROFILE`."""
    profile = os.environ.get("SSR_PROFILE", "quick")
    return config.runs_dir() / f"utkface-{profile}" / "model.keras"


def check_run():
    """Check that notebook 05 has trained and saved its model."""
    path = trained_model_path()
    if path.is_file():
        return Check("trained model", True, str(path))
    profile = path.parent.name.removeprefix("utkface-")
    fix = (
        "run notebook 05, Training and evaluating on UTKFace, or "
        f"`{python_command()} -m ssr_lib train --dataset utkface --profile {profile} "
        f"--output {path.parent}`."
    )
    return Check("trained model", False, f"{path} not found", fix)


def check_widgets():
    """Check that the widget packages import, and give their versions."""
    versions, missing = [], []
    for package in WIDGET_PACKAGES:
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
        else:
            versions.append(f"{package} {_package_version(package)}")
    if not missing:
        return Check("widgets", True, ", ".join(versions))
    fix = f"run `{python_command()} -m pip install -e \".[book]\"` in the repository root."
    return Check("widgets", False, f"{', '.join(missing)} cannot be imported", fix)


CHECKS = {
    "utkface": check_utkface,
    "weights": check_weights,
    "media": check_media,
    "run": check_run,
    "widgets": check_widgets,
}


def run_checks(needs=(), optional=()):
    """Check each need in `needs` and `optional` and return a `Check` for each, in that order.

    Raises:
        ValueError: if a name is not one of `NEEDS`.
    """
    for name in (*needs, *optional):
        if name not in CHECKS:
            raise ValueError(f"Unknown need. Expected one of {NEEDS}. Received: {name!r}")
    checks = [CHECKS[name]() for name in needs]
    for name in optional:
        checks.append(_as_optional(CHECKS[name]()))
    return checks


def _as_optional(check):
    return Check(check.name, check.found, check.detail, check.fix, optional=True)


def check_environment(needs=(), optional=()):
    """Print the software versions and whether each need is found, with a fix for each missing one.

    `needs` are things the notebook cannot run without, and `optional` ones
    are things it uses when they are there. Both take names from `NEEDS`. The
    report goes to standard output, one line per check and one per fix.

    Called by the first code cell of each notebook.
    """
    print(describe_software())
    for check in run_checks(needs, optional):
        print(f"{check.name}: {check.status}, {check.detail}")
        if not check.found:
            print(f"  To fix: {check.fix}")
