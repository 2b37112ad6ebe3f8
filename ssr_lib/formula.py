"""The soft stagewise regression formula in NumPy, independent of Keras.

Stage k of K has `s_k` bins and gives, for each image, a vector `p` (one
value per bin), shifts `eta` (one per bin, in [-1, 1]) and one scale `delta`
(in [-1, 1]). The predicted age is

    y = V * sum_k sum_i p_k[i] * (i + lambda_local * eta_k[i])
                      / prod_{j <= k} s_j * (1 + lambda_d * delta_j)

where `V` is the width of the age range. The released SSR-Net code uses
V = 101 (ages 0 to 100).

Introduced in notebook 03, *The soft stagewise regression formula*.
"""

import numpy as np

# The smallest value that `1 + lambda_d * delta` may take. With lambda_d = 1 a
# tanh output of exactly -1 (float32 tanh saturates there) would divide by
# zero, so the factor is clipped to this floor in NumPy and in Keras alike.
MIN_SCALE = 1e-3

AGE_RANGE = 101.0


def soft_stagewise_regression(p, eta, delta, lambda_local=1.0, lambda_d=1.0,
                              age_range=AGE_RANGE):
    """Compute SSR-Net's age from the stage outputs.

    Args:
        p: list of K arrays, the k-th of shape `(batch, s_k)`. The released
            code takes them from a ReLU and does not normalise them.
        eta: list of K arrays of the same shapes as `p`, values in [-1, 1].
        delta: list of K arrays of shape `(batch,)` or `(batch, 1)`, values
            in [-1, 1].
        lambda_local: weight of the shifts `eta`. Defaults to `1.0`.
        lambda_d: weight of the scales `delta`. Defaults to `1.0`.
        age_range: `V`, the width of the age range. Defaults to `101.0`.

    Returns:
        Array of shape `(batch,)`, the predicted ages, in the dtype of `p[0]`.

    Raises:
        ValueError: if the three lists differ in length or are empty.
    """
    if not (len(p) == len(eta) == len(delta)) or not p:
        raise ValueError(
            "Expected non-empty lists p, eta and delta of equal length. "
            f"Received: len(p)={len(p)}, len(eta)={len(eta)}, len(delta)={len(delta)}"
        )
    dtype = np.asarray(p[0]).dtype
    age = 0.0
    width = 1.0
    for p_k, eta_k, delta_k in zip(p, eta, delta):
        p_k = np.asarray(p_k, dtype)
        eta_k = np.asarray(eta_k, dtype)
        delta_k = np.asarray(delta_k, dtype).reshape(len(p_k))
        bins = p_k.shape[-1]
        scale = np.maximum(1 + lambda_d * delta_k, MIN_SCALE).astype(dtype)
        width = width * (bins * scale)
        index = np.arange(bins, dtype=dtype)
        age = age + np.sum(p_k * (index + lambda_local * eta_k), axis=-1) / width
    return (age_range * age).astype(dtype)
