"""The models SSR-Net is compared with: MobileNet, DenseNet and a DEX head.

The SSR-Net authors compared their network with two compact backbones,
each ending in a small regression head, and released weights for four of
them. The kit builds the same four, layer for layer, so the authors' weights
load into them and their parameter counts equal the released ones:

| name | backbone | head |
| --- | --- | --- |
| `mobilenet_0.25`, `mobilenet_0.5` | `keras.applications.MobileNet` at width 0.25 or 0.5 | 1x1 conv to 20 channels, flatten, dropout, dense 32, dense 1 |
| `densenet_13`, `densenet_19` | DenseNet of depth 13 or 19, growth 12, no bottleneck or compression | dense 128, dropout, dense 32, dense 1 |

`build_dex` is the kit's own addition: SSR-Net's two streams and stage
features, read by one 101-bin softmax whose expected value is the age, as in
DEX (Rothe et al., 2018). It shows what the stagewise design buys when the
features are the same.

Every model maps `(batch, 64, 64, 3)` float32 images with values 0..255 to
`(batch, 1)` ages, like `model.build_ssrnet`, so one training function
trains them all.

Introduced in notebook 07, *Comparing with MobileNet and DenseNet*.
"""

import keras
from keras import layers, ops

from ssr_lib.formula import AGE_RANGE
from ssr_lib.model import STREAMS, _backbone, _stage_features, build_ssrnet, stage_taps

# Dropout before the regression head, as in the released baselines.
HEAD_DROPOUT = 0.2
# DenseNet settings of the released models: 24 filters in the first conv, 12
# new channels per layer, weight decay 1e-4 on every conv.
DENSENET_FILTERS = 24
DENSENET_GROWTH = 12
DENSENET_WEIGHT_DECAY = 1e-4


def build_mobilenet(alpha=0.25, image_size=64, name=None):
    """Build the released MobileNet regressor: `keras.applications.MobileNet` and a small head.

    The backbone is trained from scratch (`weights=None`): the paper did not
    use ImageNet weights, and nothing is downloaded.

    Args:
        alpha: width multiplier of MobileNet. The authors released 0.25 and 0.5.
        image_size: height and width of the input. Defaults to `64`.
        name: model name. Defaults to `mobilenet_reg_<alpha>_<size>`, the
            authors' name.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    backbone = keras.applications.MobileNet(
        input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False, weights=None,
        name=f"mobilenet_{alpha}_{image_size}",
    )
    x = backbone(inputs)
    x = layers.Conv2D(20, 1, activation="relu", name="head_conv")(x)
    x = layers.Flatten(name="head_flatten")(x)
    return _regression_head(inputs, x, name or f"mobilenet_reg_{alpha}_{image_size}")


def build_densenet(depth=13, image_size=64, name=None):
    """Build the released DenseNet regressor.

    Three dense blocks of `(depth - 4) / 3` layers each. A layer is
    `BatchNorm -> ReLU -> Conv 3x3` with 12 filters, whose output is
    concatenated to its input. Between blocks, a transition applies
    `BatchNorm -> ReLU -> Conv 1x1 -> AveragePooling 2x2`, keeping the
    number of channels. After the last block come `BatchNorm -> ReLU` and
    global average pooling, then the head: dense 128, dropout, dense 32, dense 1.

    Args:
        depth: 13 or 19 in the authors' release; any `3n + 4` works.
        image_size: height and width of the input. Defaults to `64`.
        name: model name. Defaults to `densenet_reg_<depth>_<size>`.

    Raises:
        ValueError: if `depth - 4` is not a positive multiple of 3.
    """
    if depth < 7 or (depth - 4) % 3:
        raise ValueError(f"Expected a depth of 3n + 4 with n >= 1, such as 13 or 19. Received: depth={depth}")
    per_block = (depth - 4) // 3
    decay = keras.regularizers.L2(DENSENET_WEIGHT_DECAY)

    def conv(filters, size, x):
        return layers.Conv2D(filters, size, padding="same", use_bias=False,
                             kernel_initializer="he_normal", kernel_regularizer=decay)(x)

    def norm_relu(x):
        x = layers.BatchNormalization(epsilon=1.1e-5)(x)
        return layers.Activation("relu")(x)

    backbone_input = keras.Input((image_size, image_size, 3))
    x = conv(DENSENET_FILTERS, 3, backbone_input)
    for block in range(3):
        for _ in range(per_block):
            x = layers.Concatenate()([x, conv(DENSENET_GROWTH, 3, norm_relu(x))])
        if block < 2:
            x = conv(x.shape[-1], 1, norm_relu(x))
            x = layers.AveragePooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(norm_relu(x))
    backbone = keras.Model(backbone_input, x, name=f"densenet_{depth}")

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Dense(128, activation="relu", name="head_dense")(backbone(inputs))
    return _regression_head(inputs, x, name or f"densenet_reg_{depth}_{image_size}")


def _regression_head(inputs, x, name):
    """Finish a baseline: dropout, dense 32 with ReLU, dense 1 with no activation."""
    x = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(x)
    x = layers.Dense(32, activation="relu", name="head_features")(x)
    age = layers.Dense(1, name="age")(x)
    return keras.Model(inputs, age, name=name)


@keras.saving.register_keras_serializable(package="ssr_lib")
class ExpectedAge(layers.Layer):
    """Turn a softmax over `bins` ages, evenly spread over `age_range` years, into its expected value."""

    def __init__(self, age_range=AGE_RANGE, **kwargs):
        super().__init__(**kwargs)
        self.age_range = float(age_range)

    def call(self, probabilities):
        bins = probabilities.shape[-1]
        ages = ops.cast(ops.arange(bins), probabilities.dtype) * (self.age_range / bins)
        return ops.sum(probabilities * ages, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "age_range": self.age_range}


def build_dex(bins=101, num_stages=3, image_size=64, name=None):
    """Build SSR-Net's streams and stage features with one DEX head instead of the stages.

    Each of SSR-Net's `num_stages` stages reads both streams at one depth
    (`model.stage_taps`). Here the element-wise products of those stream
    features are concatenated and read by a single `Dense(bins, softmax)`,
    whose expected value is the age: 101 bins of one year each, as in DEX.

    Args:
        bins: number of age bins. Defaults to `101` (ages 0 to 100).
        num_stages: how many of SSR-Net's feature taps to use. Defaults to `3`.
        image_size: height and width of the input. Defaults to `64`.
        name: model name. Defaults to `dex_<bins>_<size>`.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    taps = {stream: _backbone(inputs, stream) for stream in STREAMS}
    products = []
    for stage, (tap, pool_size) in enumerate(stage_taps(num_stages), start=1):
        features = [_stage_features(taps, stream, stage, tap, pool_size) for stream in STREAMS]
        products.append(layers.Multiply(name=f"stage{stage}_product")(features))
    x = layers.Concatenate(name="features")(products) if len(products) > 1 else products[0]
    x = layers.Dropout(HEAD_DROPOUT, name="dex_dropout")(x)
    probabilities = layers.Dense(bins, activation="softmax", name="dex_probabilities")(x)
    age = ExpectedAge(AGE_RANGE, name="age")(probabilities)
    return keras.Model(inputs, age, name=name or f"dex_{bins}_{image_size}")


# The models of the comparison, by the kit's name. Each builder takes no
# arguments and returns a fresh, untrained model.
BUILDERS = {
    "ssrnet": build_ssrnet,
    "dex": build_dex,
    "mobilenet_0.25": lambda: build_mobilenet(0.25),
    "mobilenet_0.5": lambda: build_mobilenet(0.5),
    "densenet_13": lambda: build_densenet(13),
    "densenet_19": lambda: build_densenet(19),
}

# The authors' released name of each model, the folder of its weights.
RELEASED_NAMES = {
    "ssrnet": "ssrnet_3_3_3_64_1.0_1.0",
    "mobilenet_0.25": "mobilenet_reg_0.25_64",
    "mobilenet_0.5": "mobilenet_reg_0.5_64",
    "densenet_13": "densenet_reg_13_64",
    "densenet_19": "densenet_reg_19_64",
}


def build(name):
    """Build the comparison model called `name`, a key of `BUILDERS`."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown model. Expected one of {sorted(BUILDERS)}. Received: {name!r}")
    return BUILDERS[name]()


def copy_matching_weights(source, target):
    """Copy the weights of every layer of `source` into the layer of `target` with its name.

    Layers whose names or shapes differ are left as they are. `build_dex`
    names its streams and stage features as `model.build_ssrnet` does, so
    this gives a DEX head SSR-Net's trained features.

    Returns:
        The names of the layers copied.
    """
    copied = []
    for layer in target.layers:
        try:
            origin = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = origin.get_weights()
        if weights and [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied.append(layer.name)
    return copied
