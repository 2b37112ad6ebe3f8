"""Training SSR-Net with its paper's recipe, resumable and CPU-friendly.

The recipe is that of Yang et al., "SSR-Net" (IJCAI 2018). It uses Adam and
the L1 loss (mean absolute error in years). The learning rate is multiplied
by 0.1 after one third and after two thirds of the epochs (epochs 30 and 60
of 90 in the paper). Augmentation flips each face horizontally with
probability 0.5, then applies rotation up to 20 degrees, shear 0.2, shift 0.2 and
zoom 0.8..1.2, each applied with probability 0.25.

Introduced in notebook 05, *Training and evaluating on UTKFace*.
"""

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers, ops


@dataclass
class Profile:
    """Training settings. `decay_epochs` are the epochs where the rate drops tenfold."""

    epochs: int
    batch_size: int
    learning_rate: float
    decay_epochs: tuple = field(default_factory=tuple)
    augment: bool = True
    bn_momentum: float = 0.99


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


def get_profile(profile="quick", **overrides):
    """Return the `Profile` named `profile` with any field replaced by `overrides`."""
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown training profile. Expected one of {sorted(PROFILES)}. Received: {profile!r}"
        )
    settings = asdict(PROFILES[profile])
    settings.update({k: v for k, v in overrides.items() if v is not None})
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
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        augmentation = build_augmentation(seed)
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


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


def read_history(path):
    """Read a training history CSV, keeping the last row of each epoch.

    A run that was interrupted and resumed may have logged an epoch twice.
    """
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def train(model, splits, output_dir, profile="quick", seed=0, resume=True, verbose=2, **overrides):
    """Train `model` on `splits["train"]`, validating on `splits["val"]`.

    Writes to `output_dir`: `model.keras` (the final model),
    `history.csv` (per epoch: `loss` and `val_loss`, which add any weight
    decay to the error; `mae` and `val_mae`, the error alone in years; and
    `learning_rate`), `profile.json` and, while training runs, `backup/`
    with a checkpoint per epoch. An interrupted run started again with the
    same `output_dir` resumes from its last finished epoch; a finished run
    is loaded instead of retrained unless `resume=False`. Either needs the
    same settings as the run in the folder.

    Args:
        model: a Keras model from images `(batch, h, w, 3)` 0..255 to ages.
        splits: dict with `"train"` and `"val"` `data.Split` objects.
        output_dir: folder for the run's files.
        profile: a key of `PROFILES`: `"quick"`, `"full"` or `"compare"`.
            Defaults to `"quick"`.
        seed: seed of weights, shuffling and augmentation. Defaults to `0`.
        resume: continue or reuse a run found in `output_dir`. Defaults to `True`.
        verbose: Keras `fit` verbosity. Defaults to `2` (one line per epoch).
        **overrides: fields of `Profile` to change, such as `epochs=3`.

    Returns:
        `(model, history)`: the trained model and a `pandas.DataFrame` with
        one row per epoch.

    Raises:
        ValueError: if `output_dir` contains a run with other settings and
            `resume` is on; the message names the settings that differ.
    """
    profile = get_profile(profile, **overrides)
    output_dir = Path(output_dir)
    saved_profile = output_dir / "profile.json"
    if resume and saved_profile.is_file():
        previous = json.loads(saved_profile.read_text())
        current = json.loads(json.dumps(asdict(profile)))
        differing = sorted(key for key in current if previous.get(key) != current[key])
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
    if not resume:
        for stale in (final_model, history_file):
            stale.unlink(missing_ok=True)
        shutil.rmtree(output_dir / "backup", ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "profile.json").write_text(json.dumps(asdict(profile), indent=2))

    keras.utils.set_random_seed(seed)
    set_bn_momentum(model, profile.bn_momentum)
    train_ds = make_dataset(splits["train"].images, splits["train"].ages, profile.batch_size,
                            shuffle=True, augment=profile.augment, seed=seed)
    val_ds = make_dataset(splits["val"].images, splits["val"].ages, 256)
    # The loss includes any weight decay (DenseNet has some), so the error in
    # years is also tracked on its own, as `mae`.
    model.compile(optimizer=keras.optimizers.Adam(profile.learning_rate), loss="mean_absolute_error",
                  metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    # The history row is written before the backup, so a run killed between
    # the two repeats that epoch (and `read_history` keeps the last row)
    # rather than losing it. A run killed while it writes the backup leaves a
    # damaged file; `double_checkpoint` keeps the previous epoch's backup to
    # fall back on.
    callbacks = [
        keras.callbacks.LearningRateScheduler(step_decay(profile)),
        keras.callbacks.CSVLogger(str(history_file), append=True),
        keras.callbacks.BackupAndRestore(str(output_dir / "backup"), double_checkpoint=True),
    ]
    model.fit(train_ds, validation_data=val_ds, epochs=profile.epochs, callbacks=callbacks,
              shuffle=False, verbose=verbose)
    model.save(final_model)
    return model, read_history(history_file)
