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


def plot_history(history, title=None):
    """Plot training and validation MAE per epoch from a history table.

    `history` is a `pandas.DataFrame` with columns `epoch`, `loss` and
    `val_loss` (mean absolute error in years), as `train.train` writes.
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    epochs = history["epoch"] + 1
    ax.plot(epochs, history["loss"], label="training")
    ax.plot(epochs, history["val_loss"], label="validation")
    if "learning_rate" in history:
        drops = epochs[history["learning_rate"].diff() < 0]
        for epoch in drops:
            ax.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (years)")
    ax.set_title(title or "Learning curves (dotted lines: learning rate divided by 10)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_predictions(ages, predicted, title=None):
    """Scatter predicted against true age, with the line of perfect predictions."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
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
