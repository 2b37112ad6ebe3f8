"""Downloading and unpacking datasets and weights, resumably and safely.

`fetch` writes to `<name>.part` beside the destination, resumes an interrupted
transfer with an HTTP Range request, checks the size and the SHA-256 checksum,
and only then renames the file into place, so a complete-looking file is
always complete. `extract` unpacks into a temporary folder beside the target,
rejects members that would land outside it, and renames the folder into place
when every member is out.
"""

import hashlib
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ssr_lib import config

CHUNK_BYTES = 1 << 20
COMPLETE_MARKER = ".complete"


class DownloadError(RuntimeError):
    """Raised when a transfer fails, stops short or has the wrong checksum."""


class UnsafeArchiveError(ValueError):
    """Raised when an archive member would be written outside the target folder."""


@dataclass(frozen=True)
class Source:
    """A file to download and the folder, under the data folder, that it unpacks to."""

    url: str
    filename: str
    target: str
    sha256: str = None
    note: str = ""


# NOTE: the checksums of these files have not been recorded, because the
# machine the kit was written on had no network. `fetch` prints each file's
# SHA-256 after downloading it so that it can be pinned here.
SOURCES = {
    "imdb": Source(
        "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/imdb_crop.tar",
        "imdb_crop.tar", "imdb_crop", note="IMDB faces and imdb.mat, about 7 GB",
    ),
    "wiki": Source(
        "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/static/wiki_crop.tar",
        "wiki_crop.tar", "wiki_crop", note="WIKI faces and wiki.mat, about 1 GB",
    ),
    "fgnet": Source(
        "https://yanweifu.github.io/FG_NET_data/FGNET.zip", "FGNET.zip", "FGNET",
        note="FG-NET, 1,002 photos of 82 people with 68 landmarks each, about 46 MB",
    ),
    "ssrnet-weights": Source(
        "https://github.com/shamangary/SSR-Net/archive/refs/heads/master.zip",
        "SSR-Net-master.zip", "SSR-Net-master",
        note="the authors' repository, whose pre-trained models are copied to pretrained/",
    ),
}

MANUAL = {
    "utkface": "UTKFace is shared through a cloud drive that needs a browser: download "
               "'Aligned&Cropped Faces' (UTKFace.tar.gz) from the UTKFace project page "
               "(https://susanqq.github.io/UTKFace/) and run `tar -xzf UTKFace.tar.gz -C <data dir>`.",
    "morph2": "MORPH album 2 is obtained by application to its owners; unpack it into "
              "<data dir>/MORPH2.",
    "megaage-asian": "MegaAge-Asian is shared from the MegaAge project page of CUHK's Multimedia "
                     "Laboratory; download it there and unpack it into <data dir>/megaage_asian.",
}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _report_progress(done, total, started):
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = done / elapsed / 1e6
    if total:
        print(f"\r  {done / 1e6:8.1f} of {total / 1e6:.1f} MB ({100 * done / total:5.1f}%), "
              f"{rate:.1f} MB/s", end="", file=sys.stderr, flush=True)
    else:
        print(f"\r  {done / 1e6:8.1f} MB, {rate:.1f} MB/s", end="", file=sys.stderr, flush=True)


def fetch(url, destination, sha256=None, timeout=60, progress=True):
    """Download `url` to `destination`, resuming a `.part` file left by an earlier try.

    Args:
        url: the address to download.
        destination: the file to write.
        sha256: expected hex digest, or `None` to skip the check (the digest
            is printed then). Defaults to `None`.
        timeout: seconds to wait for the server. Defaults to `60`.
        progress: print a progress line on standard error. Defaults to `True`.

    Returns:
        The destination path.

    Raises:
        DownloadError: if the server fails, the transfer stops before the
            announced size (the `.part` file stays for the next try), or the
            checksum differs (the `.part` file is deleted).
    """
    destination = Path(destination)
    if destination.is_file() and (sha256 is None or _sha256(destination) == sha256):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    start = partial.stat().st_size if partial.is_file() else 0

    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:
            response = None  # the part file already contains everything the server has
        else:
            raise DownloadError(f"Download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"Download of {url} failed: {error}. Check the network and run again.") from error

    if response is not None:
        with response:
            if start and response.status != 206:
                start = 0  # the server ignored the Range request and sends the whole file
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            done = start
            started = time.monotonic()
            with open(partial, "ab" if start else "wb") as file:
                try:
                    for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                        file.write(block)
                        done += len(block)
                        if progress:
                            _report_progress(done, total, started)
                except (OSError, urllib.error.URLError) as error:
                    raise DownloadError(
                        f"Download of {url} broke off after {done:,} bytes ({error}). "
                        f"Run again to resume from {partial}."
                    ) from error
            if progress:
                print(file=sys.stderr)
        if total is not None and done < total:
            raise DownloadError(
                f"Download of {url} stopped at {done:,} of {total:,} bytes. "
                f"Run again to resume from {partial}."
            )

    digest = _sha256(partial)
    if sha256 is not None and digest != sha256:
        partial.unlink()
        raise DownloadError(
            f"Checksum mismatch for {url}: expected SHA-256 {sha256}, received {digest}. "
            "The damaged file was deleted; run again to download it anew."
        )
    if sha256 is None:
        print(f"SHA-256 of {destination.name}: {digest} (not checked: no checksum recorded)")
    os.replace(partial, destination)
    return destination


def _check_member(name, target):
    """Raise if archive member `name` would resolve outside `target`."""
    resolved = (target / name).resolve()
    if resolved != target.resolve() and target.resolve() not in resolved.parents:
        raise UnsafeArchiveError(
            f"Archive member {name!r} would be written outside {target}; nothing was extracted."
        )


def extract(archive, target):
    """Unpack a tar or zip `archive` into the folder `target`.

    Every member is checked before anything is written. The files go to a
    temporary folder beside `target`, which is renamed to `target` at the
    end, so `target` either is complete or does not exist. A `target` that
    an earlier call completed is left as it is.

    Raises:
        UnsafeArchiveError: if a member's path, or a link's destination,
            lies outside `target`.
        ValueError: if `archive` is neither a tar nor a zip file.
    """
    archive, target = Path(archive), Path(target)
    if (target / COMPLETE_MARKER).is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member.name, staging)
                    if member.issym() or member.islnk():
                        _check_member(os.path.join(os.path.dirname(member.name), member.linkname), staging)
                tar.extractall(staging, members=members, filter="data")
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zip_file:
                for name in zip_file.namelist():
                    _check_member(name, staging)
                zip_file.extractall(staging)
        else:
            raise ValueError(f"Expected a tar or zip archive. Received: {archive}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / COMPLETE_MARKER).write_text(f"extracted from {archive.name}\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def install_released_weights(repository, pretrained):
    """Copy every released model folder of the unpacked authors' repository.

    Finds each `<dataset>/<model>/<model>.h5` in `repository` and copies its
    folder to `pretrained/<dataset>/<model>/`. Returns the number copied.
    """
    copied = 0
    for weights in sorted(Path(repository).rglob("*.h5")):
        model_dir = weights.parent
        if weights.stem != model_dir.name or weights.name.startswith("history_"):
            continue
        destination = Path(pretrained) / model_dir.parent.name / model_dir.name
        if not destination.is_dir():
            shutil.copytree(model_dir, destination)
        copied += 1
    return copied


def download(name, data_dir=None):
    """Download and unpack the source `name` of `SOURCES` into the data folder.

    Raises:
        ValueError: if `name` is unknown or must be fetched by hand, with how.
    """
    if name in MANUAL:
        raise ValueError(f"{name} cannot be downloaded automatically. {MANUAL[name]}")
    if name not in SOURCES:
        raise ValueError(f"Unknown download. Expected one of {sorted(SOURCES)}. Received: {name!r}")
    source = SOURCES[name]
    data_dir = Path(data_dir) if data_dir else config.data_dir()
    print(f"Downloading {name}: {source.note}")
    archive = fetch(source.url, data_dir / "downloads" / source.filename, source.sha256)
    target = extract(archive, data_dir / "downloads" / source.target
                     if name == "ssrnet-weights" else data_dir / source.target)
    if name == "ssrnet-weights":
        count = install_released_weights(target, data_dir / "pretrained")
        print(f"Installed {count} released models into {data_dir / 'pretrained'}")
    return target
