"""SSR-Net in Keras 3.

Reference: Yang, Huang, Lin, Hsiu and Chuang, "SSR-Net: A Compact Soft
Stagewise Regression Network for Age Estimation", IJCAI 2018.

Input contract: images of shape `(batch, 64, 64, 3)`, float32, pixel values
0..255 with no scaling or mean subtraction. The kit trains on RGB; the
authors' released weights were trained on BGR images read by OpenCV.

Introduced in notebook 04, *Building SSR-Net*.
"""

import zipfile

import keras
from keras import layers, ops

from ssr_lib.formula import AGE_RANGE, MIN_SCALE

# The two streams of the backbone: channels, activation and pooling.
STREAMS = {
    "stream1": {"channels": 32, "activation": "relu", "pool": layers.AveragePooling2D},
    "stream2": {"channels": 16, "activation": "tanh", "pool": layers.MaxPooling2D},
}

# The pool applied after each backbone output's 1x1 conv, so that every stage
# but the one reading the 4x4 last block gets a 3x3 map at 64x64 input.
TAP_POOL_SIZES = {"block4": None, "pool3": 2, "pool2": 4, "pool1": 8}


def stage_taps(num_stages):
    """Return the backbone output and pool size that feed each of `num_stages` stages.

    Coarse stages read deep features and fine stages shallow ones. Up to three
    stages follow the released SSR-Net(3,3,3): the last block, then the second
    pool, then the first pool. Four stages add the third pool between the last
    block and the second pool. Stages beyond four read the first pool again,
    each through its own 1x1 conv.
    """
    if num_stages < 1:
        raise ValueError(f"Expected at least one stage. Received: num_stages={num_stages}")
    if num_stages <= 3:
        order = ["block4", "pool2", "pool1"][:num_stages]
    else:
        order = ["block4", "pool3", "pool2", "pool1"] + ["pool1"] * (num_stages - 4)
    return [(tap, TAP_POOL_SIZES[tap]) for tap in order]

FUSION_CHANNELS = 10
DROPOUT_RATE = 0.2


@keras.saving.register_keras_serializable(package="ssr_lib")
class SoftStagewiseRegression(layers.Layer):
    """Combine the stage outputs into one age, as `formula.soft_stagewise_regression`.

    Args:
        lambda_local: weight of the shifts `eta`. Defaults to `1.0`.
        lambda_d: weight of the scales `delta`. Defaults to `1.0`.
        age_range: `V`, the width of the age range. Defaults to `101.0`.

    Call arguments:
        inputs: a list of 3K tensors: `p_1..p_K` of shape `(batch, s_k)`,
            then `eta_1..eta_K` of the same shapes, then `delta_1..delta_K`
            of shape `(batch, 1)`.

    Returns:
        A tensor of shape `(batch, 1)`, the predicted age.
    """

    def __init__(self, lambda_local=1.0, lambda_d=1.0, age_range=AGE_RANGE, **kwargs):
        super().__init__(**kwargs)
        self.lambda_local = float(lambda_local)
        self.lambda_d = float(lambda_d)
        self.age_range = float(age_range)

    def call(self, inputs):
        if len(inputs) % 3:
            raise ValueError(
                f"Expected 3K inputs (p, eta and delta per stage). Received: {len(inputs)}"
            )
        num_stages = len(inputs) // 3
        p = inputs[:num_stages]
        eta = inputs[num_stages:2 * num_stages]
        delta = inputs[2 * num_stages:]

        age = 0.0
        width = 1.0
        for p_k, eta_k, delta_k in zip(p, eta, delta):
            bins = p_k.shape[-1]
            scale = ops.maximum(1.0 + self.lambda_d * delta_k, MIN_SCALE)
            width = width * (bins * scale)
            index = ops.cast(ops.arange(bins), p_k.dtype)
            weighted = ops.sum(p_k * (index + self.lambda_local * eta_k), axis=-1, keepdims=True)
            age = age + weighted / width
        return self.age_range * age

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            lambda_local=self.lambda_local, lambda_d=self.lambda_d, age_range=self.age_range
        )
        return config


def _conv_block(x, stream, block):
    """Apply `Conv 3x3 (valid) -> BatchNorm -> activation` of one backbone block."""
    settings = STREAMS[stream]
    x = layers.Conv2D(settings["channels"], 3, name=f"{stream}_block{block}_conv")(x)
    x = layers.BatchNormalization(name=f"{stream}_block{block}_bn")(x)
    return layers.Activation(settings["activation"], name=f"{stream}_block{block}_act")(x)


def _backbone(inputs, stream):
    """Build one stream and return its outputs by name: pool1..pool3 and block4."""
    pool = STREAMS[stream]["pool"]
    taps = {}
    x = inputs
    for block in (1, 2, 3):
        x = _conv_block(x, stream, block)
        x = pool(2, name=f"{stream}_pool{block}")(x)
        taps[f"pool{block}"] = x
    taps["block4"] = _conv_block(x, stream, 4)
    return taps


def _stage_features(taps, stream, stage, tap, pool_size):
    """Turn one stream's output `tap` into the flat feature vector of `stage`."""
    x = layers.Conv2D(
        FUSION_CHANNELS, 1, activation="relu", name=f"stage{stage}_{stream}_conv"
    )(taps[stream][tap])
    if pool_size:
        x = STREAMS[stream]["pool"](pool_size, name=f"stage{stage}_{stream}_pool")(x)
    return layers.Flatten(name=f"stage{stage}_{stream}_flatten")(x)


def _fusion_block(taps, stage, bins, tap, pool_size):
    """Build one stage's head on backbone output `tap`; return its `(p, eta, delta)`."""
    features = {s: _stage_features(taps, s, stage, tap, pool_size) for s in STREAMS}

    product = layers.Multiply(name=f"stage{stage}_delta_product")(list(features.values()))
    delta = layers.Dense(1, activation="tanh", name=f"stage{stage}_delta")(product)

    projected = []
    for stream, x in features.items():
        x = layers.Dropout(DROPOUT_RATE, name=f"stage{stage}_{stream}_dropout")(x)
        x = layers.Dense(bins, activation="relu", name=f"stage{stage}_{stream}_dense")(x)
        projected.append(x)
    x = layers.Multiply(name=f"stage{stage}_product")(projected)
    x = layers.Dense(2 * bins, activation="relu", name=f"stage{stage}_hidden")(x)
    p = layers.Dense(bins, activation="relu", name=f"stage{stage}_p")(x)
    eta = layers.Dense(bins, activation="tanh", name=f"stage{stage}_eta")(x)
    return p, eta, delta


def build_ssrnet(stage_bins=(3, 3, 3), lambda_local=1.0, lambda_d=1.0, image_size=64,
                 age_range=AGE_RANGE, name=None):
    """Build SSR-Net as a functional Keras model.

    Args:
        stage_bins: bins per stage, `(s_1, ..., s_K)`, from the coarsest stage
            to the finest, K >= 1. Defaults to `(3, 3, 3)`, the released
            model. `stage_taps` lists the features each stage reads.
        lambda_local: weight of the per-bin shifts. Defaults to `1.0`.
        lambda_d: weight of the per-stage scale. Defaults to `1.0`.
        image_size: height and width of the input. Defaults to `64`.
        age_range: `V`, the width of the age range. Defaults to `101.0`.
        name: model name. Defaults to `ssrnet_<bins>_<size>`.

    Returns:
        A `keras.Model` mapping `(batch, size, size, 3)` float32 images with
        values 0..255 to `(batch, 1)` ages.

    Raises:
        ValueError: if `stage_bins` is empty or contains a bin count below 1.
    """
    stage_bins = tuple(int(b) for b in stage_bins)
    if not stage_bins or min(stage_bins) < 1:
        raise ValueError(
            f"Expected at least one stage with at least one bin each. Received: stage_bins={stage_bins}"
        )
    if name is None:
        name = "ssrnet_" + "_".join(map(str, stage_bins)) + f"_{image_size}"

    inputs = keras.Input((image_size, image_size, 3), name="image")
    taps = {stream: _backbone(inputs, stream) for stream in STREAMS}

    outputs = [
        _fusion_block(taps, k, bins, tap, pool_size)
        for k, (bins, (tap, pool_size)) in enumerate(zip(stage_bins, stage_taps(len(stage_bins))), start=1)
    ]
    p, eta, delta = (list(group) for group in zip(*outputs))
    # float32 even under a mixed-precision policy: the division by 1 + lambda_d * delta
    # and ages near 100 need more than float16's three significant digits.
    age = SoftStagewiseRegression(lambda_local, lambda_d, age_range, name="age", dtype="float32")(p + eta + delta)
    return keras.Model(inputs, age, name=name)


def count_bytes(model):
    """Return the bytes the model's weights take in memory (4 per float32 value)."""
    return int(sum(w.size * w.dtype.itemsize for w in (v.numpy() for v in model.weights)))


def load_model(path):
    """Load a model saved by the kit as `.keras`, with Keras' safe mode on.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is not a `.keras` file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Model file not found: {path}. Train one with "
            "`python -m ssr_lib train --output DIR`, which writes DIR/model.keras."
        )
    if path.suffix != ".keras":
        raise ValueError(
            f"Expected a Keras 3 model file ending in .keras. Received: {path}"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} could not be loaded as a Keras model ({error}). It may be damaged "
            "or incomplete: train again, or copy the file again."
        ) from error
