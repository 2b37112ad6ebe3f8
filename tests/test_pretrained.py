"""The authors' released Keras 2 weights, loaded into the kit's Keras 3 model.

An independent NumPy interpreter of the released model config computes the
reference ages straight from the `.h5` arrays, layer by layer in the order
the config lists them.
"""

import json

import h5py
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ssr_lib import data, pretrained

RELEASED = ["imdb", "wiki", "morph2"]
MODEL = "ssrnet_3_3_3_64_1.0_1.0"


def released_files(shared, dataset):
    folder = shared / "pretrained" / dataset / MODEL
    return folder / f"{MODEL}.h5", folder / f"{MODEL}.json"


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def h5_arrays(path):
    """Read `{layer: {"kernel": array, ...}}` from a Keras 2 weight file."""
    arrays = {}
    with h5py.File(path, "r") as file:
        root = file["model_weights"] if "model_weights" in file else file
        for layer in map(text, root.attrs["layer_names"]):
            names = map(text, root[layer].attrs["weight_names"])
            arrays[layer] = {n.split("/")[-1].split(":")[0]: root[layer][n][()] for n in names}
    return arrays


def activation(x, name):
    return {"linear": x, "relu": np.maximum(x, 0), "tanh": np.tanh(x)}[name]


def merge_age(stages, lambda_local, lambda_d, v=101.0):
    """The released code's age formula, written out for three stages."""
    p, delta, eta = stages[0:3], stages[3:6], stages[6:9]
    age = 0.0
    width = 1.0
    for k in range(3):
        width = width * p[k].shape[1] * (1 + lambda_d * delta[k][:, 0])
        index = np.arange(p[k].shape[1])
        age = age + ((index + lambda_local * eta[k]) * p[k]).sum(axis=1) / width
    return v * age


def numpy_forward(config, weights, x):
    outputs = {}
    for layer in config["config"]["layers"]:
        name, kind, settings = layer["name"], layer["class_name"], layer["config"]
        inputs = [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x
        elif kind == "Conv2D":
            kh, kw = settings["kernel_size"]
            windows = sliding_window_view(inputs[0], (kh, kw), axis=(1, 2))  # (n, h, w, c, kh, kw)
            y = np.einsum("nhwcij,ijcf->nhwf", windows, w["kernel"]) + w["bias"]
            y = activation(y, settings["activation"])
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + settings["epsilon"])
            y = y * w["gamma"] + w["beta"]
        elif kind == "Activation":
            y = activation(inputs[0], settings["activation"])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            size = settings["pool_size"][0]
            n, h, wd, c = inputs[0].shape
            blocks = inputs[0][:, : h // size * size, : wd // size * size]
            blocks = blocks.reshape(n, h // size, size, wd // size, size, c)
            y = blocks.max(axis=(2, 4)) if kind == "MaxPooling2D" else blocks.mean(axis=(2, 4))
        elif kind == "Flatten":
            y = inputs[0].reshape(len(inputs[0]), -1)
        elif kind == "Dropout":
            y = inputs[0]
        elif kind == "Dense":
            y = activation(inputs[0] @ w["kernel"] + w["bias"], settings["activation"])
        elif kind == "Multiply":
            y = inputs[0] * inputs[1]
        elif kind == "Lambda":
            args = settings["arguments"]
            y = merge_age(inputs, args["lambda_local"], args["lambda_d"])
        else:
            raise AssertionError(f"layer kind {kind} not handled")
        outputs[name] = y
    return outputs[config["config"]["output_layers"][0][0]].reshape(-1)


@pytest.fixture(scope="module")
def real_faces_bgr(shared):
    folder = data.find_utkface(shared / "data")
    names = sorted(p.name for p in folder.iterdir() if data.UTKFACE_PATTERN.match(p.name))[::997][:16]
    faces = np.stack([data.load_face(folder / name) for name in names])
    return faces[..., ::-1].astype(np.float64)  # RGB to BGR


@pytest.mark.parametrize("dataset", RELEASED)
def test_released_weights_match_numpy(shared, real_faces_bgr, dataset):
    h5_path, json_path = released_files(shared, dataset)
    config = json.loads(json_path.read_text())
    expected = numpy_forward(config, h5_arrays(h5_path), real_faces_bgr)

    model = pretrained.load_model(h5_path)
    predicted = model.predict(real_faces_bgr.astype(np.float32), verbose=0).reshape(-1)
    assert np.all(np.isfinite(expected))
    assert np.abs(predicted - expected).max() < 0.01


def test_released_layers_matched_by_architecture(shared):
    _, json_path = released_files(shared, "imdb")
    mapping = pretrained.match_layers(pretrained.Keras2Graph.from_json(json_path))
    assert mapping["stream1_block1_conv"] == "conv2d_1"  # 32 channels, ReLU
    assert mapping["stream2_block1_conv"] == "conv2d_5"  # 16 channels, Tanh
    assert mapping["stage1_stream2_conv"] == "conv2d_9"
    assert mapping["stage3_p"] == "pred_age_stage3"
    assert mapping["stage2_eta"] == "local_delta_stage2"
    assert mapping["stage1_delta"] == "delta_s1"
    assert len(mapping) == 2 * 4 * 2 + 3 * 8


def test_shape_mismatch_names_the_layer(shared, tmp_path):
    h5_path, json_path = released_files(shared, "imdb")
    broken = tmp_path / f"{MODEL}.h5"
    broken.write_bytes(h5_path.read_bytes())
    (tmp_path / f"{MODEL}.json").write_text(json_path.read_text())
    with h5py.File(broken, "r+") as file:
        group = file["dense_3"]["dense_3"]
        del group["kernel:0"]
        group["kernel:0"] = np.zeros((3, 7), np.float32)
    with pytest.raises(pretrained.ReleasedModelError, match="dense_3.*stage1_hidden"):
        pretrained.load_model(broken)


def test_missing_config_is_a_message(shared, tmp_path):
    h5_path, _ = released_files(shared, "imdb")
    lonely = tmp_path / f"{MODEL}.h5"
    lonely.write_bytes(h5_path.read_bytes())
    with pytest.raises(FileNotFoundError, match="side by side"):
        pretrained.load_model(lonely)


def test_damaged_h5_is_a_message(shared, tmp_path):
    _, json_path = released_files(shared, "imdb")
    (tmp_path / f"{MODEL}.json").write_text(json_path.read_text())
    (tmp_path / f"{MODEL}.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(pretrained.ReleasedModelError, match="could not be read"):
        pretrained.load_model(tmp_path / f"{MODEL}.h5")


def test_baseline_weights_are_not_ssrnet(shared):
    densenet = shared / "pretrained" / "imdb" / "densenet_reg_13_64" / "densenet_reg_13_64.h5"
    with pytest.raises(pretrained.ReleasedModelError, match="does not describe an SSR-Net"):
        pretrained.load_model(densenet)


def test_damaged_keras_file_is_a_message(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="could not be loaded"):
        pretrained.load_model(path)


def test_package_level_load_model(shared):
    import ssr_lib

    h5_path, _ = released_files(shared, "wiki")
    assert ssr_lib.load_model(h5_path).count_params() == 40_915
