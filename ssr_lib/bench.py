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


def measure(name, function, batch, repeats=30, rounds=5, path="", section=""):
    """Time `function` and return one benchmark row as a dict.

    `path` names the way the model runs (`predict`, `compiled`, `tflite`...)
    and `section` the group of rows the row belongs to.
    """
    latency = time_ms(function, repeats=repeats, rounds=rounds, warmup=1 if batch > 16 else 3)
    return {"section": section, "model": name, "path": path, "batch": batch, "latency_ms": latency,
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
        repeats, rounds: see `time_ms`. Batches above 16 use a tenth of
            `repeats`, at least 1, and at most 3 rounds.

    Returns:
        A list of rows: `section` (`"models"`), `model`, `path`, `batch`,
        `latency_ms`, `images_per_s` and `ratio`, the row's latency over
        the first model's at the same batch size.
    """
    rows = []
    for batch in batches:
        x = tf.constant(np.resize(images, (batch, *images.shape[1:])), tf.float32)
        # A batch of 256 through DenseNet takes seconds on a CPU: a few calls are enough.
        count, batch_rounds = (repeats, rounds) if batch <= 16 else (max(1, repeats // 10), min(rounds, 3))
        baseline = None
        for name, model in models.items():
            function = compiled_predict(model, batch, jit_compile=path == "compiled_xla")
            row = measure(name, lambda f=function: f(x).numpy(), batch, count, batch_rounds, path, "models")
            if baseline is None:
                baseline = row["latency_ms"]
            row["ratio"] = row["latency_ms"] / baseline
            rows.append(row)
    return rows


class EpochTimer(keras.callbacks.Callback):
    """Record how long each epoch of `fit` takes, in seconds."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def training_throughput(model, images, ages, batch_size=64, steps=20, source="pipeline", augment=True,
                        epochs=4, jit_compile="auto"):
    """Return training images per second of `model`, from the real pipeline or from memory.

    `source="pipeline"` feeds `train.make_dataset`: shuffle, cast, and the
    SSR-Net paper's augmentation when `augment` is on. `source="memory"`
    feeds one batch already cast to float32, again and again, so only the
    model's step is timed. When the two are close, the model, not the pipeline, limits
    training.

    One `fit` runs `epochs` short epochs of `steps` steps on one iterator.
    The first epoch compiles the step and fills the shuffle buffer, so it is
    left out; the result is the median speed of the others. `jit_compile`
    goes to `model.compile`: Keras' `"auto"` compiles the step with XLA when
    every layer allows it.
    """
    if source == "pipeline":
        dataset = make_dataset(images, ages, batch_size, shuffle=True, augment=augment).repeat()
    elif source == "memory":
        batch = (tf.constant(images[:batch_size], tf.float32), tf.constant(ages[:batch_size], tf.float32))
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
    else:
        raise ValueError(f"Expected source 'pipeline' or 'memory'. Received: {source!r}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_absolute_error", jit_compile=jit_compile)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    return steps * batch_size / statistics.median(timer.seconds[1:])


def single_face_paths(model, faces, export_dir):
    """Time every way the kit can run `model` on one face, with exports checked on `faces`.

    Writes TFLite (float32, int8 weights, full int8) and ONNX files of
    `model` into `export_dir`. Returns rows as `benchmark_models` does, in
    section `"one_face"`, with `ratio` against `model.predict`, plus
    `bytes` (size of the exported file) and `max_diff_years` (largest
    difference from the Keras model's ages on `faces`) for the exported
    paths. The int8 files run on TensorFlow Lite's own kernels, because
    XNNPACK failed to prepare SSR-Net's quantised graph. So their times are
    not those of the fast float32 path.
    """
    from ssr_lib import export

    faces = np.asarray(faces, np.float32)
    one = faces[:1]
    reference = model.predict(faces, verbose=0)[:, 0]
    paths = inference_paths(model, one)
    checks = {}
    files = {
        "tflite": export.to_tflite(model, f"{export_dir}/{model.name}.tflite"),
        "tflite_int8_weights": export.to_tflite(model, f"{export_dir}/{model.name}_int8_weights.tflite",
                                                quantize="weights"),
        "tflite_int8": export.to_tflite(model, f"{export_dir}/{model.name}_int8.tflite", quantize="full",
                                        calibration=faces),
        "onnx": export.to_onnx(model, f"{export_dir}/{model.name}.onnx"),
    }
    for name, file in files.items():
        if name == "onnx":
            runner = export.ONNXModel(file)
            paths[name] = lambda r=runner: r.predict(one)
        else:
            runner = export.TFLiteModel(file, use_xnnpack=name == "tflite")
            paths[name] = lambda r=runner: r.predict_one(one[0])
        checks[name] = {"bytes": file.stat().st_size,
                        "max_diff_years": float(np.abs(runner.predict(faces) - reference).max())}

    rows = []
    for name, function in paths.items():
        row = measure(model.name, function, 1, repeats=10 if name in ("predict", "call") else 30, path=name,
                      section="one_face")
        row.update(checks.get(name, {}))
        rows.append(row)
    for row in rows:
        row["ratio"] = row["latency_ms"] / rows[0]["latency_ms"]
    return rows


def training_rows(models, images, ages, batch_size=64, steps=20):
    """Return training throughput rows of `models` from the pipeline and from memory."""
    rows = []
    for name, model in models.items():
        for source in ("pipeline", "memory"):
            speed = training_throughput(model, images, ages, batch_size, steps, source)
            rows.append({"section": "training", "model": name, "path": f"train_{source}", "batch": batch_size,
                         "latency_ms": batch_size / speed * 1000, "images_per_s": speed})
    return rows
