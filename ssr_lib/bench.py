"""Measuring speed: one face, a batch of faces, and training.

Each number is measured in the calling process, on the same machine and at
the same time as the numbers it is compared with, and reported with its
ratio to a baseline (SSR-Net, or a plain `model.predict`). Absolute times
move with the machine and its load; ratios measured together move much less.

Introduced in notebook 07, *Comparing with MobileNet and DenseNet*, and
shown in notebook 11, *Benchmarks*.
"""

import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from ssr_lib.train import make_dataset


def compiled_predict(model, batch_size=1, jit_compile=False):
    """Return `model` in inference mode as a `tf.function` with a fixed input signature.

    A fixed signature means one trace: every later call runs the compiled
    graph without Python in the loop. `jit_compile=True` adds XLA, which
    fuses operations; whether that helps depends on the model and machine.
    """
    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec], jit_compile=jit_compile)
    def predict(images):
        return model(images, training=False)

    return predict


def time_ms(function, repeats=30, rounds=5, warmup=3):
    """Return the median over `rounds` of the mean time of one call, in milliseconds.

    Each round times `repeats` calls in a row after `warmup` untimed calls.
    The median over rounds ignores a round slowed by another process.
    """
    for _ in range(warmup):
        function()
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        means.append((time.perf_counter() - start) / repeats * 1000)
    return statistics.median(means)


def inference_paths(model, images):
    """Return the ways to run `model` on `images`, by name, each a function of no arguments.

    `predict` is `model.predict`, `call` an eager `model(x)`, `compiled` a
    `tf.function` with a fixed signature, and `compiled_xla` the same with XLA.
    """
    x = tf.constant(images, tf.float32)
    compiled = compiled_predict(model, len(images))
    xla = compiled_predict(model, len(images), jit_compile=True)
    return {
        "predict": lambda: model.predict(x, verbose=0),
        "call": lambda: model(x, training=False),
        "compiled": lambda: compiled(x).numpy(),
        "compiled_xla": lambda: xla(x).numpy(),
    }


def measure(name, function, batch, repeats=30, rounds=5, path=""):
    """Time `function` and return one benchmark row as a dict."""
    latency = time_ms(function, repeats=repeats, rounds=rounds)
    return {"model": name, "path": path, "batch": batch, "latency_ms": latency,
            "images_per_s": batch / latency * 1000}


def benchmark_models(models, images, batches=(1, 256), path="compiled", repeats=30, rounds=5):
    """Time every model of `models` (a dict of name to model) on real faces.

    Args:
        models: `{name: keras.Model}`. The first one is the baseline of the
            `ratio` column (the kit passes SSR-Net first).
        images: float32 faces `(n, 64, 64, 3)`; the first `batch` are used.
        batches: batch sizes to time. Defaults to 1 (latency for one face)
            and 256 (throughput).
        path: `"compiled"` or `"compiled_xla"`. Defaults to `"compiled"`.
        repeats, rounds: see `time_ms`. Batches above 16 use a fifth of
            `repeats`, at least 3.

    Returns:
        A list of rows: `model`, `path`, `batch`, `latency_ms`,
        `images_per_s` and `ratio`, the row's latency over the first
        model's at the same batch size.
    """
    rows = []
    for batch in batches:
        x = tf.constant(np.resize(images, (batch, *images.shape[1:])), tf.float32)
        count = repeats if batch <= 16 else max(3, repeats // 5)
        baseline = None
        for name, model in models.items():
            function = compiled_predict(model, batch, jit_compile=path == "compiled_xla")
            row = measure(name, lambda f=function: f(x).numpy(), batch, count, rounds, path)
            baseline = baseline or row["latency_ms"]
            row["ratio"] = row["latency_ms"] / baseline
            rows.append(row)
    return rows


def training_throughput(model, images, ages, batch_size=64, steps=20, source="pipeline", augment=True):
    """Return training images per second of `model`, from the real pipeline or from memory.

    `source="pipeline"` feeds `train.make_dataset` (shuffle, cast, and the
    paper's augmentation when `augment`); `source="memory"` feeds one batch
    already cast to float32, again and again, so only the model's step is
    timed. When the two are close, the model, not the pipeline, limits
    training. One untimed call of `steps` steps compiles the step first.
    """
    if source == "pipeline":
        dataset = make_dataset(images, ages, batch_size, shuffle=True, augment=augment).repeat()
    elif source == "memory":
        batch = (tf.constant(images[:batch_size], tf.float32), tf.constant(ages[:batch_size], tf.float32))
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
    else:
        raise ValueError(f"Expected source 'pipeline' or 'memory'. Received: {source!r}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_absolute_error")
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)
