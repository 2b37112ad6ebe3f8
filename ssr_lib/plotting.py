"""Figures shared by the notebooks: face grids, learning curves, predicted ages.

Every function takes RGB images (uint8, values 0..255) and returns the
Matplotlib figure, so a notebook can show it or save it.
"""

import matplotlib.pyplot as plt
import numpy as np

FIGSIZE = (7.0, 4.0)


def show_faces(images, ages, predicted=None, ncols=8, size=1.2):
    """Show faces in a grid, titled with the true and, if given, predicted age.

    Args:
        images: uint8 array `(n, h, w, 3)`, RGB, values 0..255.
        ages: true ages, `(n,)`.
        predicted: predicted ages, `(n,)`, or `None`. Defaults to `None`.
        ncols: faces per row. Defaults to `8`.
        size: inches per face. Defaults to `1.2`.
    """
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.3)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i])
        title = f"{ages[i]:.0f}"
        if predicted is not None:
            title = f"true {ages[i]:.0f}\npred {predicted[i]:.0f}"
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(history, title=None, ax=None):
    """Plot training and validation MAE per epoch from a history table.

    `history` is a `pandas.DataFrame` with columns `epoch`, `loss` and
    `val_loss` (mean absolute error in years), as `train.train` writes.
    Draws on `ax` if given, else on a new figure.
    """
    fig, ax = plt.subplots(figsize=FIGSIZE) if ax is None else (ax.figure, ax)
    epochs = history["epoch"] + 1
    ax.plot(epochs, history["loss"], label="training")
    ax.plot(epochs, history["val_loss"], label="validation")
    if "learning_rate" in history:
        drops = epochs[history["learning_rate"].diff() < 0]
        for epoch in drops:
            ax.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (years)")
    ax.set_title(title or "Learning curves (dotted: learning rate / 10)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_predictions(ages, predicted, title=None, ax=None):
    """Scatter predicted against true age, with the line of perfect predictions.

    Draws on `ax` if given, else on a new figure.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5)) if ax is None else (ax.figure, ax)
    ax.scatter(ages, predicted, s=4, alpha=0.3)
    ax.plot([0, 100], [0, 100], color="black", linewidth=1)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("predicted age (years)")
    ax.set_title(title or "Predicted against true age")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_stagewise(p, eta, delta, lambda_local=1.0, lambda_d=1.0, age_range=101.0, ax=None):
    """Draw one face's stages as bins on the age axis, coarse at the top.

    Stage k's bins start where the stages before it left the age, and each is
    `age_range / prod_{j<=k} s_j (1 + lambda_d delta_j)` years wide, moved by
    its shift `eta`. A bin's shade is its share of `p`; the triangle marks the
    age after that stage, and the last one is the prediction.

    Args:
        p: list of K 1-D arrays, one value per bin.
        eta: list of K 1-D arrays of shifts in [-1, 1].
        delta: list of K scales in [-1, 1].
        lambda_local, lambda_d, age_range: as in `formula.soft_stagewise_regression`.
        ax: Matplotlib axes to draw on. Defaults to a new figure.
    """
    from ssr_lib.formula import MIN_SCALE

    fig, ax = plt.subplots(figsize=(FIGSIZE[0], 0.8 + 0.7 * len(p))) if ax is None else (ax.figure, ax)
    age = 0.0
    width = float(age_range)
    for k, (p_k, eta_k, delta_k) in enumerate(zip(p, eta, delta)):
        p_k = np.asarray(p_k, float)
        eta_k = np.asarray(eta_k, float)
        bins = len(p_k)
        width = width / (bins * max(1 + lambda_d * float(delta_k), MIN_SCALE))
        shade = p_k / p_k.sum() if p_k.sum() > 0 else np.zeros(bins)
        positions = np.arange(bins) + lambda_local * eta_k
        for i in range(bins):
            ax.barh(k, width, left=age + positions[i] * width, height=0.6, color="tab:blue",
                    alpha=0.15 + 0.85 * shade[i], edgecolor="black", linewidth=0.5)
        age = age + float(np.sum(p_k * positions)) * width
        ax.plot(age, k - 0.4, marker="v", color="tab:red", markersize=9)
    ax.axvline(age, color="tab:red", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(p)), [f"stage {k + 1}" for k in range(len(p))])
    ax.invert_yaxis()
    ax.set_xlim(0, age_range)
    ax.set_xlabel("age (years)")
    ax.set_title(f"Predicted age {age:.1f} years")
    fig.tight_layout()
    return fig
