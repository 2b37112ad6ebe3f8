import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from ssr_lib import formula
from ssr_lib.model import SoftStagewiseRegression, build_ssrnet, count_bytes, load_model, stage_taps


@pytest.fixture(scope="module")
def ssrnet():
    keras.utils.set_random_seed(0)
    return build_ssrnet()


def random_stage_outputs(rng, batch, stage_bins):
    p = [rng.uniform(0, 2, (batch, s)).astype(np.float32) for s in stage_bins]
    eta = [rng.uniform(-1, 1, (batch, s)).astype(np.float32) for s in stage_bins]
    delta = [rng.uniform(-0.99, 0.99, (batch, 1)).astype(np.float32) for _ in stage_bins]
    return p, eta, delta


def test_released_parameter_count(ssrnet):
    assert ssrnet.count_params() == 40_915


def test_weight_bytes_are_float32(ssrnet):
    assert count_bytes(ssrnet) == 4 * 40_915


@pytest.mark.parametrize(
    "stage_bins, lambda_local, lambda_d",
    [((3, 3, 3), 1.0, 1.0), ((3, 3, 3), 0.0, 0.0), ((9,), 1.0, 1.0), ((101,), 0.0, 0.0), ((2, 5), 0.5, 2.0)],
)
def test_layer_matches_numpy_formula(stage_bins, lambda_local, lambda_d):
    p, eta, delta = random_stage_outputs(np.random.default_rng(7), 16, stage_bins)
    layer = SoftStagewiseRegression(lambda_local, lambda_d)
    keras_age = keras.ops.convert_to_numpy(layer(p + eta + delta)).reshape(-1)
    numpy_age = formula.soft_stagewise_regression(p, eta, delta, lambda_local, lambda_d)
    np.testing.assert_allclose(keras_age, numpy_age, rtol=1e-5, atol=1e-4)


def test_layer_guard_at_delta_minus_one():
    p = [np.ones((1, 3), np.float32)]
    eta = [np.zeros((1, 3), np.float32)]
    delta = [-np.ones((1, 1), np.float32)]
    age = keras.ops.convert_to_numpy(SoftStagewiseRegression()(p + eta + delta))
    assert np.all(np.isfinite(age))
    np.testing.assert_allclose(age.ravel(), formula.soft_stagewise_regression(p, eta, delta), rtol=1e-6)


def test_model_output_shape(ssrnet):
    faces = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    assert ssrnet.predict(faces, verbose=0).shape == (2, 1)


def test_keras_file_round_trip_in_safe_mode(ssrnet, tmp_path):
    faces = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    path = tmp_path / "ssrnet.keras"
    ssrnet.save(path)
    loaded = load_model(path)  # safe_mode=True
    np.testing.assert_array_equal(ssrnet.predict(faces, verbose=0), loaded.predict(faces, verbose=0))


def test_load_model_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ssr_lib train"):
        load_model(tmp_path / "absent.keras")


def test_load_model_wrong_suffix(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.keras"):
        load_model(path)


@pytest.mark.parametrize("stage_bins", [(), (3, 0)])
def test_invalid_stage_bins_rejected(stage_bins):
    with pytest.raises(ValueError, match="stage_bins"):
        build_ssrnet(stage_bins)


def test_summary_command_reports_released_count():
    result = subprocess.run(
        [sys.executable, "-m", "ssr_lib", "summary", "--stages", "3", "3", "3", "--json"],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["parameters"] == 40_915
    assert summary["bytes"] == 163_660


def expected_parameters(stage_bins):
    """Count SSR-Net's parameters by hand for a 64x64 input."""
    # Backbone: 3x3 convs with bias, BatchNorm with 4 values per channel.
    stream1 = (27 * 32 + 32) + 3 * (288 * 32 + 32) + 4 * 4 * 32
    stream2 = (27 * 16 + 16) + 3 * (144 * 16 + 16) + 4 * 4 * 16
    total = stream1 + stream2
    feature_sizes = {"block4": 4 * 4 * 10, "pool3": 3 * 3 * 10, "pool2": 3 * 3 * 10, "pool1": 3 * 3 * 10}
    for bins, (tap, _) in zip(stage_bins, stage_taps(len(stage_bins))):
        features = feature_sizes[tap]
        total += (32 * 10 + 10) + (16 * 10 + 10)  # the two 1x1 convs
        total += features + 1  # delta
        total += 2 * (features * bins + bins)  # one Dense(s) per stream
        total += bins * 2 * bins + 2 * bins  # Dense(2s)
        total += 2 * (2 * bins * bins + bins)  # p and eta
    return total


@pytest.mark.parametrize("stage_bins", [(3, 3, 3), (9,), (2, 2, 2, 2), (5, 4), (3, 3, 3, 3, 3)])
def test_parameter_count_matches_hand_formula(stage_bins):
    assert build_ssrnet(stage_bins).count_params() == expected_parameters(stage_bins)
