"""ssr_lib: the package behind the SSR-Net teaching kit.

One module per concern: `config` (folders), `data` (UTKFace), `datasets`
(the other datasets' readers), `imdbwiki` (IMDB-WIKI metadata), `download`,
`faces` (detection and alignment), `prepare` (sharded preparation and
streaming), `formula` (the soft stagewise regression in NumPy), `model`
(SSR-Net in Keras 3), `baselines` (MobileNet, DenseNet, DEX), `pretrained`
(the authors' weights), `train`, `distribute` (`tf.distribute` strategies),
`evaluate`, `bench`, `export`, `video`, `widgets`, `plotting`,
`environment`, `exercises` and `cli`.
"""

import os

# Keep TensorFlow's C++ start-up messages out of notebooks and logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load_model(path):
    """Load a kit `.keras` model (RGB input) or an authors' released `.h5` SSR-Net (BGR input)."""
    from ssr_lib.pretrained import load_model as load

    return load(path)


def set_seed(seed=0, deterministic=False):
    """Seed Python, NumPy and the Keras backend in one call.

    With `deterministic=True`, TensorFlow also picks deterministic kernels,
    which is slower. Thread scheduling, library versions and hardware can
    still change the last digits of results.
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
