"""Notebooks: committed without outputs, and the whole book builds on real faces."""

import importlib.util
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from ssr_lib import data, evaluate
from ssr_lib.model import load_model

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_and_listed():
    toc = (ROOT / "_toc.yml").read_text()
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        assert re.match(r"\d\d_", path.name), f"{path.name} lacks its reading-order number"
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is missing from _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has stored outputs; clear them"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.book
def test_book_builds_on_real_faces(shared, built_book):
    """Check the pages and the trained model of the book that `built_book` executed with `-W`."""
    html = built_book
    for path in NOTEBOOKS:
        page = (html / "notebooks" / f"{path.stem}.html").read_text()
        assert "Traceback" not in page, f"{path.stem}.html shows a traceback"

    check_demo_page(html)
    check_comparison_pages(html)

    metrics_file = Path(os.environ["SSR_RUNS_DIR"]) / "utkface-quick" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert metrics["mae"] < 8.0, f"quick profile test MAE {metrics['mae']:.2f} is not below 8.0"
    page = (html / "notebooks" / "05_training_on_utkface.html").read_text()
    assert f"SSR-Net test MAE: {metrics['mae']:.2f} years" in page

    # The trained model loads in safe mode and reproduces the book's test metrics.
    model = load_model(metrics_file.parent / "model.keras")
    test_split = data.load_utkface(shared / "data", verbose=False)["test"]
    reloaded = evaluate.evaluate(model, test_split)
    assert reloaded["n_test"] == metrics["n_test"]
    assert abs(reloaded["mae"] - metrics["mae"]) < 1e-4


def check_comparison_pages(html):
    """Chapter 7 trained every model with three seeds, chapter 11 ran the benchmark command, chapter 12 two workers."""
    page = (html / "notebooks" / "07_comparing_models.html").read_text()
    assert "Every released model has exactly the kit" in page
    for label in ("SSR-Net(3,3,3)", "MobileNet 0.25", "MobileNet 0.5", "DenseNet-13", "DenseNet-19"):
        assert re.search(re.escape(label) + r": MAE \d+\.\d\d, \d+\.\d\d, \d+\.\d\d", page), label
    page = (html / "notebooks" / "11_benchmarks.html").read_text()
    assert "Fastest path for one face:" in page
    assert "tflite: ages within" in page
    page = (html / "notebooks" / "12_training_at_scale.html").read_text()
    assert re.search(r"Two workers took \d+\.\d\d times as long as one", page)
    assert re.search(r"mixed precision against float32 on 256 faces: mean difference 0\.\d{3} years", page)
    for backend in ("torch", "jax"):
        if importlib.util.find_spec(backend):
            assert f"backend {backend}:" in page


def check_demo_page(html):
    """The demo chapter shows the annotated clip as an animated GIF, readable without a kernel."""
    from PIL import Image

    page = (html / "notebooks" / "08_demo.html").read_text()
    gifs = re.findall(r'src="\.\./(_images/[0-9a-f]+\.gif)"', page)
    assert len(gifs) == 1, "the demo page shows no annotated GIF"
    with Image.open(html / gifs[0]) as gif:
        assert gif.n_frames > 60
