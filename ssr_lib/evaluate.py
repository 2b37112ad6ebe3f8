"""Age metrics: MAE and cumulative accuracy CA(n).

Introduced in notebook 05, *Training and evaluating on UTKFace*.
"""

import numpy as np


def predict_ages(model, images, batch_size=256):
    """Predict ages for a batch of images.

    Args:
        model: a Keras model from `(batch, h, w, 3)` float32 0..255 to ages.
        images: array `(n, h, w, 3)`, uint8 or float, values 0..255, in the
            channel order the model was trained on (RGB for the kit's models).
        batch_size: images per forward pass. Defaults to `256`.

    Returns:
        float32 array `(n,)` of ages in years.
    """
    x = np.asarray(images, np.float32)
    return model.predict(x, batch_size=batch_size, verbose=0).reshape(-1).astype(np.float32)


def cumulative_accuracy(errors, n):
    """Return CA(n), the share of absolute errors below `n` years."""
    return float(np.mean(np.asarray(errors) < n))


def age_metrics(ages, predicted):
    """Compute MAE, CA(3) and CA(5) of `predicted` against true `ages`.

    Returns:
        A dict with `mae` (years), `ca3` and `ca5` (shares in 0..1) and
        `n_test` (number of images).
    """
    ages = np.asarray(ages, np.float64).reshape(-1)
    predicted = np.asarray(predicted, np.float64).reshape(-1)
    if ages.shape != predicted.shape or ages.size == 0:
        raise ValueError(
            "Expected equal, non-zero numbers of true and predicted ages. "
            f"Received: {ages.size} true and {predicted.size} predicted"
        )
    errors = np.abs(predicted - ages)
    return {
        "mae": float(errors.mean()),
        "ca3": cumulative_accuracy(errors, 3),
        "ca5": cumulative_accuracy(errors, 5),
        "n_test": int(ages.size),
    }


def evaluate(model, split, batch_size=256):
    """Predict every image of a `data.Split` and return `age_metrics`.

    A `prepare.ShardedSplit` is streamed from its shards, with the true age
    read next to each image.
    """
    if hasattr(split, "images"):
        return age_metrics(split.ages, predict_ages(model, split.images, batch_size))
    from ssr_lib import train

    ages, predicted = [], []
    for images, batch_ages in train.split_dataset(split, batch_size):
        predicted.append(model.predict_on_batch(images).reshape(-1))
        ages.append(batch_ages.numpy())
    return age_metrics(np.concatenate(ages), np.concatenate(predicted))
