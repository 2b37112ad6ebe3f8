"""The comparison models: released parameter counts, released weights, DEX, and training."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from ssr_lib import baselines, data, evaluate, pretrained, train

# Parameter counts of the authors' released weight files.
RELEASED_PARAMETERS = {
    "ssrnet": 40_915,
    "mobilenet_0.25": 226_309,
    "mobilenet_0.5": 842_421,
    "densenet_13": 108_377,
    "densenet_19": 242_009,
}


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMETERS))
def test_parameter_counts_equal_the_released_models(name):
    assert baselines.build(name).count_params() == RELEASED_PARAMETERS[name]


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMETERS))
def test_released_file_parameter_counts(shared, monkeypatch, name):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    assert pretrained.count_released_parameters(name) == RELEASED_PARAMETERS[name]


@pytest.fixture(scope="module")
def spread_faces(shared):
    """300 test faces of UTKFace spread over all ages, in BGR as the released weights expect."""
    test = data.load_utkface(shared / "data", verbose=False)["test"]
    order = np.argsort(test.ages, kind="stable")[:: max(1, len(test.ages) // 300)][:300]
    return test.images[order][..., ::-1].astype(np.float32), test.ages[order]


@pytest.mark.parametrize("name", ["mobilenet_0.25", "mobilenet_0.5", "densenet_13", "densenet_19"])
def test_released_baselines_give_adult_ages_on_real_faces(shared, monkeypatch, spread_faces, name):
    """Trained on IMDB's adults, every released baseline predicts adult ages on UTKFace."""
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    faces, ages = spread_faces
    predicted = evaluate.predict_ages(pretrained.load_released_baseline(name), faces)
    assert 18 < predicted.mean() < 45
    assert evaluate.age_metrics(ages, predicted)["mae"] < 20


@pytest.mark.parametrize("name", ["densenet_13", "densenet_19"])
def test_released_densenets_know_the_channel_order(shared, monkeypatch, spread_faces, name):
    """DenseNet's weights are matched by order. Only weights in their right layers know that the
    authors trained on BGR: their ages follow the true ages better in BGR than in RGB."""
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    faces, ages = spread_faces
    model = pretrained.load_released_baseline(name)
    bgr = np.corrcoef(ages, evaluate.predict_ages(model, faces))[0, 1]
    rgb = np.corrcoef(ages, evaluate.predict_ages(model, faces[..., ::-1]))[0, 1]
    assert bgr > 0.3
    assert bgr > rgb + 0.1


def test_mobilenet_weights_match_layer_names(shared, monkeypatch):
    """MobileNet's layer names are the same in Keras 2 and 3, so order and name must agree."""
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    model = pretrained.load_released_baseline("mobilenet_0.25")
    stored = pretrained.read_h5_weights_by_name(pretrained.released_weights("imdb", "mobilenet_reg_0.25_64"))
    backbone = model.get_layer("mobilenet_0.25_64")
    for layer_name in ("conv1", "conv_dw_7", "conv_pw_13_bn"):
        for variable in backbone.get_layer(layer_name).weights:
            name = "depthwise_kernel" if variable.name == "kernel" and "dw" in layer_name else variable.name
            np.testing.assert_array_equal(variable.numpy(), stored[layer_name][name])


def test_unknown_model_and_depth_are_rejected():
    with pytest.raises(ValueError, match="Unknown model"):
        baselines.build("resnet")
    with pytest.raises(ValueError, match="3n \\+ 4"):
        baselines.build_densenet(12)
    with pytest.raises(ValueError, match="No released weights"):
        pretrained.load_released_baseline("dex")


def test_expected_age_of_known_distributions():
    layer = baselines.ExpectedAge(age_range=101.0)
    one_hot = np.zeros((2, 101), np.float32)
    one_hot[0, 30] = 1.0
    one_hot[1, [20, 40]] = 0.5
    np.testing.assert_allclose(np.asarray(layer(one_hot))[:, 0], [30.0, 30.0], atol=1e-4)


def test_dex_starts_with_ssrnet_features(shared, monkeypatch, spread_faces):
    monkeypatch.setenv("SSR_PRETRAINED_DIR", str(shared / "pretrained"))
    ssrnet = pretrained.load_released_baseline("ssrnet")
    dex = baselines.build_dex()
    copied = baselines.copy_matching_weights(ssrnet, dex)
    # 4 conv and 4 BatchNorm layers per stream, and one 1x1 conv per stream and stage.
    assert len(copied) == 2 * 8 + 2 * 3
    np.testing.assert_array_equal(dex.get_layer("stage2_stream1_conv").get_weights()[0],
                                  ssrnet.get_layer("stage2_stream1_conv").get_weights()[0])
    ages = evaluate.predict_ages(dex, spread_faces[0][:16])
    assert np.all((ages >= 0) & (ages <= 101))


@pytest.mark.parametrize("name", sorted(baselines.BUILDERS))
def test_one_training_function_trains_and_saves_every_model(small_utkface, tmp_path, name):
    """`train.train` runs on each model, and the saved `.keras` file reloads with the same ages."""
    splits = data.load_utkface(small_utkface.parent, verbose=False)
    model, history = train.train(baselines.build(name), splits, tmp_path / name, profile="compare",
                                 epochs=1, verbose=0)
    assert np.isfinite(history["loss"]).all()
    reloaded = pretrained.load_model(tmp_path / name / "model.keras")
    faces = splits["test"].images.astype(np.float32)
    np.testing.assert_allclose(evaluate.predict_ages(reloaded, faces), evaluate.predict_ages(model, faces),
                               atol=1e-3)


def test_train_rejects_run_with_other_settings(small_utkface, tmp_path):
    """A folder trained with another profile is refused, naming what differs, instead of loaded."""
    splits = data.load_utkface(small_utkface.parent, verbose=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "profile.json").write_text(json.dumps(asdict(train.get_profile("quick"))))
    with pytest.raises(ValueError, match="other settings \\(.*learning_rate.*\\).*resume=False"):
        train.train(baselines.build("ssrnet"), splits, run, profile="compare")
