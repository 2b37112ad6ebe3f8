"""Loading the SSR-Net authors' released Keras 2.0.6 weights into the kit's model.

The authors released, for each training set (IMDB, WIKI, MORPH2), an HDF5
weight file `<model>.h5` and the model's Keras 2 config `<model>.json`. Their
layer names are numbered in creation order (`conv2d_5`, `dense_7`), so the
import matches layers by the architecture the config describes. It starts at
the input and follows each stream through its blocks. Then it finds each
stage's fusion block from the backbone output that the stage reads.

Input contract of the released weights: 64x64 faces, float32 values 0..255,
BGR channel order (the authors read their training images with OpenCV).
"""

import json
from collections import defaultdict
from pathlib import Path

import h5py
import keras

from ssr_lib import config
from ssr_lib.model import build_ssrnet, stage_taps

RELEASED_SSRNET = "ssrnet_3_3_3_64_1.0_1.0"
RELEASED_DATASETS = ("imdb", "wiki", "morph2")
FETCH_HINT = (
    "The weights are in the pre-trained models folder of the authors' SSR-Net "
    "repository (github.com/shamangary/SSR-Net). Copy its dataset folders "
    "(imdb/, wiki/, morph2/) into <data dir>/pretrained/, or set "
    "SSR_PRETRAINED_DIR to the folder that contains them."
)

# Each stream is identified by the activation of its blocks.
STREAM_OF_ACTIVATION = {"relu": "stream1", "tanh": "stream2"}


class ReleasedModelError(ValueError):
    """Raised when a released file does not fit the kit's SSR-Net."""


class Keras2Graph:
    """The layers of a Keras 2 functional model config and who consumes whom."""

    def __init__(self, model_config):
        self.layers = {layer["name"]: layer for layer in model_config["config"]["layers"]}
        self.consumers = defaultdict(list)
        for name, layer in self.layers.items():
            for node in layer["inbound_nodes"]:
                for source in node:
                    self.consumers[source[0]].append(name)

    @classmethod
    def from_json(cls, path):
        return cls(json.loads(Path(path).read_text()))

    def kind(self, name):
        return self.layers[name]["class_name"]

    def setting(self, name, key):
        return self.layers[name]["config"].get(key)

    def next_layer(self, name, kind, **settings):
        """Return the one consumer of `name` of class `kind` whose config matches `settings`."""
        found = [
            consumer for consumer in self.consumers[name]
            if self.kind(consumer) == kind
            and all(self.setting(consumer, k) == v for k, v in settings.items())
        ]
        if len(found) != 1:
            raise ReleasedModelError(
                f"Expected one {kind} layer {settings or ''} after layer {name!r}. Received: {found}"
            )
        return found[0]


def match_layers(graph, num_stages=3):
    """Map the kit's layer names to the released model's layer names.

    Returns:
        A dict from kit layer name (`stream1_block1_conv`, `stage2_p`, ...)
        to the released layer name (`conv2d_1`, `pred_age_stage2`, ...),
        covering every layer with weights.

    Raises:
        ReleasedModelError: if the config is not an SSR-Net of this shape.
    """
    inputs = [name for name in graph.layers if graph.kind(name) == "InputLayer"]
    if len(inputs) != 1:
        raise ReleasedModelError(f"Expected one input layer. Received: {inputs}")

    mapping = {}
    taps = {}
    for first_conv in graph.consumers[inputs[0]]:
        stream, stream_taps = _match_stream(graph, first_conv, mapping)
        taps[stream] = stream_taps
    if sorted(taps) != ["stream1", "stream2"]:
        raise ReleasedModelError(f"Expected a ReLU and a Tanh stream. Received: {sorted(taps)}")

    for stage in range(1, num_stages + 1):
        _match_stage(graph, taps, stage, mapping)
    return mapping


def _match_stream(graph, conv, mapping):
    """Follow one stream from its first conv; return its name and its taps."""
    block_layers = []
    taps = {}
    for block in (1, 2, 3, 4):
        bn = graph.next_layer(conv, "BatchNormalization")
        act = graph.next_layer(bn, "Activation")
        block_layers.append((block, conv, bn))
        if block == 4:
            taps["block4"] = act
            break
        pool = [c for c in graph.consumers[act] if graph.kind(c).endswith("Pooling2D")]
        if len(pool) != 1:
            raise ReleasedModelError(f"Expected one pooling layer after {act!r}. Received: {pool}")
        taps[f"pool{block}"] = pool[0]
        conv = graph.next_layer(pool[0], "Conv2D", kernel_size=[3, 3])

    activation = graph.setting(taps["block4"], "activation")
    stream = STREAM_OF_ACTIVATION.get(activation)
    if stream is None:
        raise ReleasedModelError(f"Unknown stream activation {activation!r} in layer {taps['block4']!r}")
    for block, conv, bn in block_layers:
        mapping[f"{stream}_block{block}_conv"] = conv
        mapping[f"{stream}_block{block}_bn"] = bn
    return stream, taps


def _match_stage(graph, taps, stage, mapping):
    """Find one stage's fusion block from the backbone outputs it reads."""
    tap, pool_size = stage_taps(3)[stage - 1]
    flattened = {}
    dense = {}
    for stream in ("stream1", "stream2"):
        conv = graph.next_layer(taps[stream][tap], "Conv2D", kernel_size=[1, 1])
        mapping[f"stage{stage}_{stream}_conv"] = conv
        x = conv
        if pool_size:
            pools = [c for c in graph.consumers[conv] if graph.kind(c).endswith("Pooling2D")]
            if len(pools) != 1 or graph.setting(pools[0], "pool_size") != [pool_size, pool_size]:
                raise ReleasedModelError(
                    f"Expected one {pool_size}x{pool_size} pool after {conv!r}. Received: {pools}"
                )
            x = pools[0]
        flattened[stream] = graph.next_layer(x, "Flatten")
        dropout = graph.next_layer(flattened[stream], "Dropout")
        dense[stream] = graph.next_layer(dropout, "Dense")
        mapping[f"stage{stage}_{stream}_dense"] = dense[stream]

    delta_product = graph.next_layer(flattened["stream1"], "Multiply")
    mapping[f"stage{stage}_delta"] = graph.next_layer(delta_product, "Dense", units=1)
    product = graph.next_layer(dense["stream1"], "Multiply")
    hidden = graph.next_layer(product, "Dense")
    mapping[f"stage{stage}_hidden"] = hidden
    mapping[f"stage{stage}_p"] = graph.next_layer(hidden, "Dense", activation="relu")
    mapping[f"stage{stage}_eta"] = graph.next_layer(hidden, "Dense", activation="tanh")


def read_h5_weights(path):
    """Read every layer's weight arrays from a Keras 2 HDF5 file, in Keras' order."""
    weights = {}
    with h5py.File(path, "r") as file:
        root = file["model_weights"] if "model_weights" in file else file
        for name in root.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            group = root[name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            if names:
                weights[name] = [group[n][()] for n in names]
    return weights


def lambdas_from_graph(graph):
    """Return `(lambda_local, lambda_d)` stored in the released model's Lambda layer."""
    for name in graph.layers:
        arguments = graph.setting(name, "arguments") or {}
        if "lambda_local" in arguments:
            return float(arguments["lambda_local"]), float(arguments["lambda_d"])
    raise ReleasedModelError("Expected a Lambda layer with `lambda_local` and `lambda_d` arguments.")


def load_released_ssrnet(h5_path, json_path=None):
    """Build SSR-Net(3,3,3) and fill it with the authors' released weights.

    Args:
        h5_path: the released weights, such as `ssrnet_3_3_3_64_1.0_1.0.h5`.
        json_path: the model config beside it. Defaults to `h5_path` with
            the suffix `.json`.

    Returns:
        A `keras.Model` that expects BGR float32 faces with values 0..255.

    Raises:
        FileNotFoundError: if either file is missing.
        ReleasedModelError: if a layer is missing or its weights have
            other shapes than the kit's layer; the message names the layer.
    """
    h5_path = Path(h5_path)
    json_path = Path(json_path) if json_path else h5_path.with_suffix(".json")
    for path in (h5_path, json_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Released model file not found: {path}. The weights (.h5) and the config "
                "(.json) must lie side by side, as in the authors' pretrained_models folder."
            )
    try:
        graph = Keras2Graph.from_json(json_path)
    except (ValueError, KeyError, TypeError) as error:
        raise ReleasedModelError(
            f"{json_path} is not a Keras 2 model config ({error!r}). Copy it again from the release."
        ) from error
    try:
        lambda_local, lambda_d = lambdas_from_graph(graph)
    except ReleasedModelError as error:
        raise ReleasedModelError(f"{json_path.name} does not describe an SSR-Net: {error}") from error
    model = build_ssrnet((3, 3, 3), lambda_local, lambda_d, name=h5_path.stem)
    try:
        weights = read_h5_weights(h5_path)
    except (OSError, KeyError) as error:
        raise ReleasedModelError(
            f"{h5_path} could not be read as a Keras 2 weight file ({error}). "
            "It may be damaged: copy or download it again."
        ) from error

    for kit_name, released_name in match_layers(graph).items():
        layer = model.get_layer(kit_name)
        if released_name not in weights:
            raise ReleasedModelError(f"{h5_path.name}: no weights for layer {released_name!r} ({kit_name}).")
        arrays = weights[released_name]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        received = [tuple(a.shape) for a in arrays]
        if expected != received:
            raise ReleasedModelError(
                f"{h5_path.name}: layer {released_name!r} does not fit the kit's {kit_name}. "
                f"Expected shapes {expected}. Received: {received}"
            )
        layer.set_weights(arrays)
    return model


def released_weights(dataset, model=RELEASED_SSRNET):
    """Return the path of the authors' `.h5` weights trained on `dataset`.

    Raises:
        FileNotFoundError: if the file is not in `config.pretrained_dir()`,
            with where to get it.
    """
    path = config.pretrained_dir() / dataset / model / f"{model}.h5"
    if not path.is_file():
        raise FileNotFoundError(f"Released weights not found: {path}. {FETCH_HINT}")
    return path


def load_model(path):
    """Load a kit `.keras` model or an authors' released `.h5` SSR-Net.

    The kit's models expect RGB faces, the released weights BGR faces.
    """
    from ssr_lib import model as kit_model

    path = Path(path)
    if path.suffix == ".h5":
        return load_released_ssrnet(path)
    return kit_model.load_model(path)



def _layers_in_order(layer_configs):
    """Yield `(class name, layer name)` of a Keras 2 config's layers, nested models unfolded."""
    for layer in layer_configs:
        if layer["class_name"] in ("Model", "Sequential"):
            yield from _layers_in_order(layer["config"]["layers"])
        else:
            yield layer["class_name"], layer["name"]


def _kit_layers_in_order(model):
    """Yield the kit model's layers that hold weights, nested models unfolded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _kit_layers_in_order(layer)
        elif layer.weights:
            yield layer


def read_h5_weights_by_name(path):
    """Read a Keras 2 HDF5 weight file into `{layer name: {weight name: array}}`.

    Nested models store their layers' weights inside their own group, under
    names such as `conv_dw_1/depthwise_kernel:0`; those are unfolded too.
    """
    weights = defaultdict(dict)
    with h5py.File(path, "r") as file:
        root = file["model_weights"] if "model_weights" in file else file
        for group_name in root.attrs["layer_names"]:
            group = root[group_name.decode() if isinstance(group_name, bytes) else group_name]
            for name in group.attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                layer, weight = name.rsplit("/", 1)
                weights[layer.rsplit("/", 1)[-1]][weight.split(":")[0]] = group[name][()]
    return weights


# Keras 2 named a depthwise conv's kernel `depthwise_kernel`; Keras 3 names it `kernel`.
KERAS2_WEIGHT_NAMES = {"kernel": ("kernel", "depthwise_kernel")}


def load_released_baseline(name, dataset="imdb"):
    """Build the comparison model `name` and fill it with the authors' weights for it.

    The authors' baselines are `mobilenet_0.25`, `mobilenet_0.5`,
    `densenet_13` and `densenet_19` (see `baselines.RELEASED_NAMES`). Their
    Keras 2 code creates the layers in the same order as `ssr_lib.baselines`.
    So the n-th layer with weights in the released config is matched with
    the n-th in the kit's model, and their classes and every weight's shape
    must agree.

    Args:
        name: a key of `baselines.RELEASED_NAMES`; `"ssrnet"` loads SSR-Net.
        dataset: `"imdb"`, `"wiki"` or `"morph2"`. Defaults to `"imdb"`.

    Returns:
        A `keras.Model` that expects BGR float32 faces with values 0..255.

    Raises:
        FileNotFoundError: if the weights are not found, with where to get them.
        ReleasedModelError: if a layer does not fit; the message names it.
    """
    from ssr_lib import baselines

    if name not in baselines.RELEASED_NAMES:
        raise ValueError(
            f"No released weights for model {name!r}. Expected one of {sorted(baselines.RELEASED_NAMES)}."
        )
    h5_path = released_weights(dataset, baselines.RELEASED_NAMES[name])
    if name == "ssrnet":
        return load_released_ssrnet(h5_path)
    json_path = h5_path.with_suffix(".json")
    if not json_path.is_file():
        raise FileNotFoundError(f"Released model config not found: {json_path}. {FETCH_HINT}")

    released = [
        (kind, layer) for kind, layer in _layers_in_order(json.loads(json_path.read_text())["config"]["layers"])
        if kind in ("Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense")
    ]
    model = baselines.build(name)
    kit_layers = list(_kit_layers_in_order(model))
    if len(released) != len(kit_layers):
        raise ReleasedModelError(
            f"{json_path.name}: expected {len(kit_layers)} layers with weights, as in the kit's "
            f"{model.name}. Received: {len(released)}"
        )
    weights = read_h5_weights_by_name(h5_path)
    for (kind, released_name), layer in zip(released, kit_layers):
        if kind != type(layer).__name__:
            raise ReleasedModelError(
                f"{h5_path.name}: layer {released_name!r} is a {kind}, but the kit's layer "
                f"{layer.name!r} at the same place is a {type(layer).__name__}."
            )
        arrays = []
        for variable in layer.weights:
            found = [weights[released_name][n] for n in KERAS2_WEIGHT_NAMES.get(variable.name, (variable.name,))
                     if n in weights[released_name]]
            if not found or tuple(found[0].shape) != tuple(variable.shape):
                raise ReleasedModelError(
                    f"{h5_path.name}: layer {released_name!r} has no {variable.name} of shape "
                    f"{tuple(variable.shape)} for the kit's layer {layer.name!r}."
                )
            arrays.append(found[0])
        layer.set_weights(arrays)
    return model


def read_released_history(name, dataset="imdb"):
    """Read the authors' training curves of a released model as a `pandas.DataFrame`.

    The `history_<model>.h5` files are pandas HDF5 tables with one row per
    epoch and the columns `loss`, `mean_absolute_error`, `val_loss` and
    `val_mean_absolute_error` (MAE in years).

    Args:
        name: a key of `baselines.RELEASED_NAMES`, such as `"ssrnet"`.
        dataset: `"imdb"`, `"wiki"` or `"morph2"`. Defaults to `"imdb"`.
    """
    import pandas as pd

    from ssr_lib import baselines

    folder = released_weights(dataset, baselines.RELEASED_NAMES[name]).parent
    path = folder / f"history_{folder.name}.h5"
    if not path.is_file():
        raise FileNotFoundError(f"Training curves not found: {path}. {FETCH_HINT}")
    return pd.read_hdf(path)


def count_released_parameters(name, dataset="imdb"):
    """Count the values stored in a released weight file, the model's parameter count."""
    from ssr_lib import baselines

    path = released_weights(dataset, baselines.RELEASED_NAMES[name])
    weights = read_h5_weights_by_name(path)
    return int(sum(array.size for layer in weights.values() for array in layer.values()))
