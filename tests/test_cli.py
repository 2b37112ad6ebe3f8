"""The command line, run as a user runs it, on real UTKFace faces."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import copy_utkface


def ssr(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "ssr_lib", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


@pytest.fixture
def utkface_400(utkface_dir, tmp_path):
    return copy_utkface(utkface_dir, tmp_path / "UTKFace", count=400, step=50)


def wait_for_rows(path, rows, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) > rows:
            return
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {rows} rows in {timeout} s")


def wait_for_backup(run, epochs, process, timeout=300):
    """Wait until the backup of `epochs` finished epochs is completely written."""
    metadata = run / "backup" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(metadata.read_text())["epoch"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError(f"{metadata} did not reach epoch {epochs} in {timeout} s")


def test_train_resumes_after_kill(utkface_400, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ssr_lib", "train", "--data-dir", utkface_400,
               "--output", run, "--epochs", "20"]
    process = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(run / "history.csv", 2, process)
    # Kill between epochs, so that the damage below is the only damage: a kill
    # while Keras copies its backup could also break the copy it falls back on.
    wait_for_backup(run, 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "model.keras").exists()
    # As if the kill had hit while the last backup was being written.
    backup = run / "backup" / "latest.weights.h5"
    backup.write_bytes(backup.read_bytes()[:1000])

    result = subprocess.run(list(map(str, command)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    raw = pd.read_csv(run / "history.csv")
    assert sorted(set(raw["epoch"])) == list(range(20))
    assert (raw["epoch"] == 0).sum() == 1, "the resumed run started again from epoch 0"

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"mae", "ca3", "ca5", "n_test"}
    assert metrics["n_test"] == 40

    again = ssr("train", "--data-dir", utkface_400, "--output", run, "--epochs", 20)
    assert "Found a finished run" in again.stdout


def test_evaluate_all_images_json(utkface_400, tmp_path):
    run = tmp_path / "run"
    assert ssr("train", "--data-dir", utkface_400, "--output", run, "--epochs", 1).returncode == 0
    result = ssr("evaluate", run / "model.keras", "--dataset", "utkface", "--data-dir", utkface_400,
                 "--split", "all", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n_test"] == 400
    assert 0 <= metrics["ca3"] <= metrics["ca5"] <= 1


def test_missing_data_folder_is_a_message(tmp_path):
    result = ssr("train", "--data-dir", tmp_path / "absent", "--output", tmp_path / "run")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "SSR_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_data_folder_is_a_message(tmp_path):
    from ssr_lib.model import build_ssrnet

    model_file = tmp_path / "model.keras"
    build_ssrnet().save(model_file)
    (tmp_path / "UTKFace").mkdir()
    result = ssr("evaluate", model_file, "--data-dir", tmp_path)
    assert result.returncode == 2
    assert "contains no .jpg files" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_a_message(utkface_400, tmp_path):
    result = ssr("evaluate", tmp_path / "none.keras", "--data-dir", utkface_400)
    assert result.returncode == 2
    assert "Model file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_released_weights(shared, utkface_400):
    weights = shared / "pretrained" / "imdb" / "ssrnet_3_3_3_64_1.0_1.0" / "ssrnet_3_3_3_64_1.0_1.0.h5"
    bgr = ssr("evaluate", weights, "--data-dir", utkface_400, "--split", "all", "--json")
    rgb = ssr("evaluate", weights, "--data-dir", utkface_400, "--split", "all", "--json", "--channels", "rgb")
    assert bgr.returncode == 0, bgr.stderr
    assert rgb.returncode == 0, rgb.stderr
    assert json.loads(bgr.stdout)["n_test"] == 400
    assert json.loads(bgr.stdout)["mae"] != json.loads(rgb.stdout)["mae"]


def test_download_manual_dataset_is_a_message(tmp_path):
    result = ssr("download", "utkface", "--data-dir", tmp_path)
    assert result.returncode == 2
    assert "UTKFace.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr
