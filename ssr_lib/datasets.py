"""One reader per face dataset, all returning `FaceRecord`s and a `SkipReport`.

Each reader takes the folder the dataset was unpacked into (its *source*
folder) and returns `(records, report)`: the usable images with their labels,
paths relative to that folder, and a count of everything skipped and why.
`READERS` maps the names that `python -m ssr_lib prepare NAME` accepts to
these functions.

Introduced in notebook 01a, *Preparing the data*.
"""

from pathlib import Path

from ssr_lib import data, imdbwiki
from ssr_lib.data import FaceRecord, SkipReport


def read_utkface(source):
    """Read UTKFace's aligned and cropped faces (`*.jpg.chip.jpg`)."""
    folder = data.find_utkface(source)
    rows, report = data.read_utkface(folder)
    prefix = "" if folder == Path(source) else folder.name + "/"
    records = [FaceRecord(prefix + name, age, 1 - gender) for name, age, gender, _ in rows]
    return records, report


def read_imdb(source):
    """Read IMDB's crops: `source` is the `imdb_crop` folder that holds `imdb.mat`."""
    return imdbwiki.read_imdbwiki(Path(source) / "imdb.mat")


def read_wiki(source):
    """Read WIKI's crops: `source` is the `wiki_crop` folder that holds `wiki.mat`."""
    return imdbwiki.read_imdbwiki(Path(source) / "wiki.mat")


READERS = {
    "utkface": read_utkface,
    "imdb": read_imdb,
    "wiki": read_wiki,
}
