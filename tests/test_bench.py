"""Benchmarks and exports: compiled paths agree with Keras, rows have their fields.

No test here asserts a speed: speed is what `python -m ssr_lib bench` reports.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssr_lib import baselines, bench, data, export, pretrained


@pytest.fixture(scope="module")
def released_ssrnet_and_faces(shared):
    model = pretrained.load_released_ssrnet(
        shared / "pretrained" / "imdb" / pretrained.RELEASED_SSRNET / f"{pretrained.RELEASED_SSRNET}.h5"
    )
    test = data.load_utkface(shared / "data", verbose=False)["test"]
    faces = test.images[::10][:200][..., ::-1].astype(np.float32)
    return model, faces


def test_compiled_predict_equals_the_model():
    model = baselines.build("ssrnet")
    faces = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    compiled = bench.compiled_predict(model, batch_size=4)
    np.testing.assert_allclose(compiled(faces).numpy(), model(faces, training=False).numpy(), rtol=1e-4)


def test_benchmark_rows_have_ratios_to_the_first_model():
    models = {"ssrnet": baselines.build("ssrnet"), "mobilenet_0.25": baselines.build("mobilenet_0.25")}
    faces = np.zeros((8, 64, 64, 3), np.float32)
    rows = bench.benchmark_models(models, faces, batches=(1, 8), repeats=2, rounds=1)
    assert [(r["model"], r["batch"]) for r in rows] == [
        ("ssrnet", 1), ("mobilenet_0.25", 1), ("ssrnet", 8), ("mobilenet_0.25", 8)]
    for row in rows:
        assert row["latency_ms"] > 0
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["latency_ms"] * 1000)
    assert rows[0]["ratio"] == rows[2]["ratio"] == 1.0


def test_training_throughput_from_both_sources(small_utkface):
    train_split = data.load_utkface(small_utkface.parent, verbose=False)["train"]
    model = baselines.build("mobilenet_0.25")
    for source in ("pipeline", "memory"):
        assert bench.training_throughput(model, train_split.images, train_split.ages, 16, 2, source) > 0
    with pytest.raises(ValueError, match="source"):
        bench.training_throughput(model, train_split.images, train_split.ages, 16, 2, "disk")


def test_exports_agree_with_keras_on_real_faces(released_ssrnet_and_faces, tmp_path):
    model, faces = released_ssrnet_and_faces
    reference = model.predict(faces, verbose=0)[:, 0]

    float32 = export.TFLiteModel(export.to_tflite(model, tmp_path / "f32.tflite")).predict(faces)
    assert np.abs(float32 - reference).max() < 0.05
    onnx = export.ONNXModel(export.to_onnx(model, tmp_path / "m.onnx")).predict(faces)
    assert np.abs(onnx - reference).max() < 0.05

    # Quantised files are compared on the mean difference: single faces near a
    # stage boundary move further (measured: up to 1.2 years with int8 weights).
    int8_weights = export.to_tflite(model, tmp_path / "w8.tflite", quantize="weights")
    ages = export.TFLiteModel(int8_weights, use_xnnpack=False).predict(faces)
    assert np.abs(ages - reference).mean() < 1.0
    assert int8_weights.stat().st_size < (tmp_path / "f32.tflite").stat().st_size / 2

    full = export.to_tflite(model, tmp_path / "i8.tflite", quantize="full", calibration=faces)
    ages = export.TFLiteModel(full, use_xnnpack=False).predict(faces)
    # Measured: about 1.2 years on average; int8 activations cost accuracy.
    assert np.abs(ages - reference).mean() < 2.0


def test_full_quantisation_needs_calibration_faces(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        export.to_tflite(baselines.build("ssrnet"), tmp_path / "m.tflite", quantize="full")
    with pytest.raises(ValueError, match="quantize"):
        export.to_tflite(baselines.build("ssrnet"), tmp_path / "m.tflite", quantize="int4")


def test_bench_command_prints_one_json_row_per_measurement(shared, tmp_path):
    env = {"SSR_DATA_DIR": str(shared / "data"), "SSR_PRETRAINED_DIR": str(shared / "pretrained")}
    result = subprocess.run(
        [sys.executable, "-m", "ssr_lib", "bench", "--models", "ssrnet", "mobilenet_0.25",
         "--training-models", "ssrnet", "--training-steps", "2", "--export-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    paths = {row["path"] for row in rows}
    assert {"predict", "compiled", "tflite", "tflite_int8", "onnx", "train_pipeline", "train_memory"} <= paths
    for row in rows:
        assert {"section", "model", "batch", "latency_ms", "images_per_s"} <= set(row)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".onnx", ".tflite", ".tflite", ".tflite"]


def test_bench_command_rejects_unknown_models():
    result = subprocess.run([sys.executable, "-m", "ssr_lib", "bench", "--models", "resnet"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Unknown model 'resnet'" in result.stderr
