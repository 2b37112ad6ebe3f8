"""Training SSR-Net with its paper's recipe, resumable and CPU-friendly.

The recipe is that of Yang et al., "SSR-Net" (IJCAI 2018). It uses Adam and
the L1 loss (mean absolute error in years). The learning rate is multiplied
by 0.1 after one third and after two thirds of the epochs (epochs 30 and 60
of 90 in the paper). Augmentation flips each face horizontally with
probability 0.5, then applies rotation up to 20 degrees, shear 0.2, shift 0.2 and
zoom 0.8..1.2, each applied with probability 0.25.

Introduced in notebook 05, *Training and evaluating on UTKFace*.
"""

import contextlib
import functools
import json
import os
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers, ops

from ssr_lib import distribute


@dataclass
class Profile:
    """Training settings.

    `decay_epochs` are the epochs where the rate drops tenfold. `optimizer`
    is `"adam"`, as in the paper, or `"sgd"` (plain gradient descent).
    """

    epochs: int
    batch_size: int
    learning_rate: float
    decay_epochs: tuple = field(default_factory=tuple)
    augment: bool = True
    bn_momentum: float = 0.99
    optimizer: str = "adam"


PROFILES = {
    # About 12 minutes on a 2-core CPU; the book is built with this profile.
    # It skips augmentation (a quarter more time per epoch on 2 cores) and
    # uses BatchNorm momentum 0.9 (see `set_bn_momentum`).
    "quick": Profile(epochs=15, batch_size=64, learning_rate=0.002, decay_epochs=(10, 13),
                     augment=False, bn_momentum=0.9),
    # The SSR-Net paper's schedule: 90 epochs, decay at 30 and 60, batch 50 as
    # on WIKI and MORPH2. The paper states a rate of 0.002, but the authors'
    # released code used Keras' default of 0.001.
    "full": Profile(epochs=90, batch_size=50, learning_rate=0.002, decay_epochs=(30, 60)),
    # Chapter 7 fine-tunes six models from the authors' IMDB weights, three
    # times each, for 2 epochs on 500 faces: a few minutes on 2 CPU cores,
    # most of it DenseNet. The rate is a quarter of the quick profile's,
    # because the weights start trained, and drops tenfold for epoch 2.
    "compare": Profile(epochs=2, batch_size=64, learning_rate=0.0005, decay_epochs=(1,),
                       augment=False, bn_momentum=0.9),
}


OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}


def get_profile(profile="quick", **overrides):
    """Return the `Profile` named `profile` with any field replaced by `overrides`."""
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown training profile. Expected one of {sorted(PROFILES)}. Received: {profile!r}"
        )
    settings = asdict(PROFILES[profile])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer. Expected one of {sorted(OPTIMIZERS)}. "
                         f"Received: {settings['optimizer']!r}")
    return Profile(**settings)


@keras.saving.register_keras_serializable(package="ssr_lib")
class RandomApply(layers.Layer):
    """Apply a wrapped augmentation layer to each image with probability `rate`."""

    def __init__(self, layer, rate=0.25, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        batch = ops.shape(images)[0]
        draw = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
        return ops.where(draw < self.rate, self.layer(images, training=True), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(layer=keras.saving.serialize_keras_object(self.layer), rate=self.rate, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


def build_augmentation(seed=0):
    """Build the SSR-Net paper's augmentation as a `keras.Sequential` of preprocessing layers.

    It maps float32 images of shape `(batch, h, w, 3)` with values 0..255 to
    images of the same shape, dtype and range.
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            RandomApply(layers.RandomRotation(20 / 360, seed=seed + 1), 0.25, seed=seed + 2),
            RandomApply(layers.RandomShear(0.2, 0.2, seed=seed + 3), 0.25, seed=seed + 4),
            RandomApply(layers.RandomTranslation(0.2, 0.2, seed=seed + 5), 0.25, seed=seed + 6),
            RandomApply(layers.RandomZoom((-0.2, 0.2), seed=seed + 7), 0.25, seed=seed + 8),
        ],
        name="augmentation",
    )


def make_dataset(images, ages, batch_size, shuffle=False, augment=False, seed=0):
    """Build a `tf.data` pipeline of `(float32 images 0..255, float32 ages)` batches.

    Args:
        images: uint8 array `(n, h, w, 3)`, values 0..255.
        ages: array `(n,)` of ages in years.
        batch_size: examples per batch.
        shuffle: reshuffle the examples every epoch. Training needs this,
            because the kit's arrays are sorted by file name and so by age.
            Defaults to `False`.
        augment: apply `build_augmentation` to every batch. Defaults to `False`.
        seed: seed of the shuffle and the augmentation. Defaults to `0`.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, np.asarray(ages, np.float32)))
    if shuffle:
        dataset = dataset.shuffle(len(ages), seed=seed, reshuffle_each_iteration=True)
    return batch_faces(dataset, batch_size, augment, seed)


def batch_faces(examples, batch_size, augment=False, seed=0):
    """Batch a dataset of `(uint8 image, age)` pairs into float32 batches, augmented if asked."""
    return _to_float(examples.batch(batch_size), augment, seed)


def _to_float(batches, augment, seed):
    dataset = batches.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        augmentation = build_augmentation(seed)
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_dataset(split, batch_size, augment=False, seed=0):
    """Build the pipeline of `make_dataset`, unshuffled, for a split in memory or on disk.

    A `data.Split` is read from memory; a `prepare.ShardedSplit` is streamed
    from its shards (`prepare.stream_faces`), so memory does not grow with
    the dataset.
    """
    from ssr_lib import prepare

    if isinstance(split, prepare.ShardedSplit):
        return batch_faces(prepare.stream_faces(split), batch_size, augment, seed)
    return make_dataset(split.images, split.ages, batch_size, augment=augment, seed=seed)


def training_batches(split, batch_size, epochs, augment=False, seed=0, first_epoch=0):
    """Return the shuffled batches of epochs `first_epoch` to `epochs - 1` of `split` as one dataset.

    Epoch `e`'s order is drawn from the seed `(seed, e)` alone, so it does not
    depend on how often the dataset was read before, and a resumed run reads
    the epochs it has left in their own order. That matters under a
    `tf.distribute` strategy, where Keras reads a batch ahead: with a dataset
    that reshuffles on every read, a distributed run would train on other
    batches than a run on one device.
    """
    from ssr_lib import prepare

    if isinstance(split, prepare.ShardedSplit):
        # One pipeline per epoch, each with its own seeds, read one after another.
        epochs_left = [prepare.stream_faces(split, shuffle=True, seed=seed, epoch=e).batch(batch_size)
                       for e in range(first_epoch, epochs)]
        return _to_float(functools.reduce(tf.data.Dataset.concatenate, epochs_left), augment, seed)
    # NOTE: the images become a constant of the dataset's graph, which suits
    # UTKFace's 250 MB. Datasets of several GB should be streamed from shards.
    images = tf.constant(split.images)
    ages = tf.constant(np.asarray(split.ages, np.float32))

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(len(split)), seed=tf.stack([seed, epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return batches.map(lambda rows: (tf.gather(images, rows), tf.gather(ages, rows)))

    return _to_float(tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch), augment, seed)


def step_decay(profile):
    """Return the learning rate schedule of `profile` as a function of the epoch."""

    def schedule(epoch, _lr=None):
        drops = sum(epoch >= e for e in profile.decay_epochs)
        return profile.learning_rate * 0.1**drops

    return schedule


def set_bn_momentum(model, momentum):
    """Set the momentum of every BatchNormalization layer's moving averages.

    SSR-Net divides by `1 + lambda_d * delta`, so small differences between
    the batch statistics used in training and the moving averages used in
    inference can move the predicted age by years. With Keras' default 0.99
    the averages trail the weights by about 100 steps. In the kit's runs on
    UTKFace the validation MAE over the first three epochs was 15 to 21 years
    with 0.99 and 10 to 12 with 0.9, so short runs use 0.9.
    """
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
        elif hasattr(layer, "layers"):
            # A model inside the model, such as MobileNet's backbone.
            set_bn_momentum(layer, momentum)


class StepCounter(keras.callbacks.Callback):
    """Callback that adds `steps`, the optimizer's updates so far, to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["steps"] = int(self.model.optimizer.iterations.numpy())


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` callback, written by the chief only (`chief=True`).

    Under a multi-worker strategy every worker restores from the chief's
    backup, so the run folder must be on storage that every worker can read.
    NOTE: it overrides Keras' private `_save_model` and calls `_load_model`
    (Keras 3.15), so a Keras upgrade may need it changed.
    """

    def __init__(self, backup_dir, chief=True, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.chief = chief

    def on_train_begin(self, logs=None):
        if self.chief:
            super().on_train_begin(logs)
        else:
            # Only read: the chief alone repairs a damaged backup.
            self._load_model()

    def _save_model(self):
        if self.chief:
            super()._save_model()

    def on_train_end(self, logs=None):
        if self.chief:
            super().on_train_end(logs)

    def finished_epochs(self):
        """Return how many epochs the backup has finished: 0 without one, or when it cannot be read."""
        try:
            return int(json.loads(Path(self._training_metadata_path).read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0


def copy_into_scope(model, strategy):
    """Rebuild `model` with its weights under `strategy.scope()`, so its variables live on every replica."""
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy


def read_history(path):
    """Read a training history CSV, keeping the last row of each epoch.

    A run that was interrupted and resumed may have logged an epoch twice.
    """
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def train(model, splits, output_dir, profile="quick", seed=0, resume=True, verbose=2, strategy=None,
          callbacks=(), **overrides):
    """Train `model` on `splits["train"]`, validating on `splits["val"]`.

    Writes to `output_dir`: `model.keras` (the final model),
    `history.csv` (per epoch: `loss` and `val_loss`, which add any weight
    decay to the error; `mae` and `val_mae`, the error alone in years; and
    `learning_rate`), `profile.json` and, while training runs, `backup/`
    with a checkpoint per epoch. An interrupted run started again with the
    same `output_dir` resumes from its last finished epoch; a finished run
    is loaded instead of retrained unless `resume=False`. Either needs the
    same settings as the run in the folder.

    With a `strategy` (see `distribute`), the model is copied onto its
    replicas, the profile's batch is each replica's share
    (`distribute.scale_for_replicas`), BatchNorm uses the global batch's
    statistics, and only the chief writes to `output_dir`.

    Args:
        model: a Keras model from images `(batch, h, w, 3)` 0..255 to ages.
        splits: dict with `"train"` and `"val"` `data.Split` objects.
        output_dir: folder for the run's files.
        profile: a key of `PROFILES`: `"quick"`, `"full"` or `"compare"`.
            Defaults to `"quick"`.
        seed: seed of weights, shuffling and augmentation. Defaults to `0`.
        resume: continue or reuse a run found in `output_dir`. Defaults to `True`.
        verbose: Keras `fit` verbosity. Defaults to `2` (one line per epoch).
        strategy: a `tf.distribute.Strategy`. Defaults to `None`: this
            process's default device, with the model used as it is.
        callbacks: more Keras callbacks for `fit`, such as
            `keras.callbacks.TensorBoard`. Defaults to none.
        **overrides: fields of `Profile` to change, such as `epochs=3`.

    Returns:
        `(model, history)`: the trained model (under a strategy, a copy
        outside it) and a `pandas.DataFrame` with one row per epoch. Its
        `steps` column counts the optimizer's updates since the run began.

    Raises:
        ValueError: if `output_dir` contains a run with other settings and
            `resume` is on; the message names the settings that differ.
    """
    profile = get_profile(profile, **overrides)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    settings = asdict(profile)
    if replicas > 1:
        profile = distribute.scale_for_replicas(profile, replicas)
        settings["replicas"] = replicas
    chief = strategy is None or distribute.is_chief()
    output_dir = Path(output_dir)
    saved_profile = output_dir / "profile.json"
    if resume and saved_profile.is_file():
        # Settings added to the kit after a run was saved take their defaults.
        defaults = {f.name: f.default for f in fields(Profile) if f.default is not MISSING} | {"replicas": 1}
        previous = defaults | json.loads(saved_profile.read_text())
        current = defaults | json.loads(json.dumps(settings))
        differing = sorted(key for key in current.keys() | previous.keys() if previous.get(key) != current.get(key))
        if differing:
            raise ValueError(
                f"{output_dir} contains a run with other settings ({', '.join(differing)}). "
                "Pass resume=False (--fresh on the command line) to train it again, or choose another folder."
            )
    final_model = output_dir / "model.keras"
    history_file = output_dir / "history.csv"
    if resume and final_model.is_file() and history_file.is_file():
        history = read_history(history_file)
        if len(history) >= profile.epochs:
            print(f"Found a finished run in {output_dir}; loading it (pass resume=False to retrain).")
            return keras.saving.load_model(final_model), history
    if chief:
        if not resume:
            for stale in (final_model, history_file):
                stale.unlink(missing_ok=True)
            shutil.rmtree(output_dir / "backup", ignore_errors=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        partial = output_dir / "profile.partial.json"
        partial.write_text(json.dumps(settings, indent=2))
        os.replace(partial, saved_profile)

    keras.utils.set_random_seed(seed)
    if strategy is not None:
        model = copy_into_scope(model, strategy)
        distribute.synchronize_batch_norm(model, replicas > 1)
    set_bn_momentum(model, profile.bn_momentum)
    backup = ChiefBackupAndRestore(str(output_dir / "backup"), chief=chief, double_checkpoint=True)
    first_epoch = backup.finished_epochs()
    train_ds = training_batches(splits["train"], profile.batch_size, profile.epochs, profile.augment, seed,
                                first_epoch)
    if first_epoch:
        # A damaged backup makes Keras fall back to the one before it, one
        # epoch earlier, which then needs one epoch of batches more.
        train_ds = train_ds.concatenate(training_batches(splits["train"], profile.batch_size, first_epoch,
                                                         profile.augment, seed, first_epoch - 1))
    val_ds = split_dataset(splits["val"], 256)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        # The loss includes any weight decay (DenseNet has some), so the error
        # in years is also tracked on its own, as `mae`.
        optimizer = OPTIMIZERS[profile.optimizer](profile.learning_rate)
        # Keras compiles the step with XLA by default. On the kit's 2-core CPU
        # that trained about 10% slower (notebook 12 measures it), so XLA is
        # kept for GPUs only.
        jit_compile = "auto" if tf.config.list_physical_devices("GPU") else False
        model.compile(optimizer=optimizer, loss="mean_absolute_error", jit_compile=jit_compile,
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    # The history row is written before the backup, so a run killed between
    # the two repeats that epoch (and `read_history` keeps the last row)
    # rather than losing it. A run killed while it writes the backup leaves a
    # damaged file; `double_checkpoint` keeps the previous epoch's backup to
    # fall back on. A run killed within an epoch starts that epoch again.
    run_callbacks = [keras.callbacks.LearningRateScheduler(step_decay(profile)), StepCounter()]
    if chief:
        run_callbacks.append(keras.callbacks.CSVLogger(str(history_file), append=True))
    run_callbacks.append(backup)
    steps_per_epoch = -(-len(splits["train"]) // profile.batch_size)
    fitted = model.fit(train_ds, validation_data=val_ds, epochs=profile.epochs, steps_per_epoch=steps_per_epoch,
                       callbacks=run_callbacks + list(callbacks),
                       shuffle=False, verbose=verbose)
    if strategy is not None:
        # Hand back an ordinary model: one whose predictions do not wait for
        # the other workers, and with BatchNorm as it was, since synchronized
        # BatchNorm loads on TensorFlow only.
        distribute.synchronize_batch_norm(model, False)
        model = copy_into_scope(model, tf.distribute.get_strategy())
    if not chief:
        return model, pd.DataFrame({"epoch": fitted.epoch, **fitted.history})
    model.save(final_model)
    return model, read_history(history_file)
