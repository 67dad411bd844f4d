"""Figures: training curves, method comparison and image grids (written atomically as PNG)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .train import atomic_write  # noqa: E402

PANELS = (("loss", "BCE loss"), ("accuracy", "accuracy"), ("eer", "EER"))


def save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return fig


def plot_history(history, path=None, title="training history"):
    """Loss, accuracy and EER per epoch, train vs validation; the best-val-loss epoch is marked."""
    h = pd.DataFrame(history)
    best = h.loc[h["val_loss"].idxmin(), "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, (key, label) in zip(axes, PANELS):
        ax.plot(h["epoch"], h[f"train_{key}"], label="train")
        ax.plot(h["epoch"], h[f"val_{key}"], label="validation")
        ax.axvline(best, color="grey", ls=":", label=f"best val loss (epoch {best})")
        ax.set(xlabel="epoch", title=label)
        if key == "eer":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    if path:
        save(fig, path)
    return fig


def plot_comparison(histories, path=None, title="method comparison (validation)"):
    """Validation loss, accuracy and EER per epoch for several runs: ``{name: history}``."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, history in histories.items():
        h = pd.DataFrame(history)
        for ax, (key, label) in zip(axes, PANELS):
            ax.plot(h["epoch"], h[f"val_{key}"], label=name)
            ax.set(xlabel="epoch", title=f"validation {label}")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    if path:
        save(fig, path)
    return fig


def image_grid(images, titles=(), path=None, cols=10, title=None):
    """Show uint8 24x24 images in a grid, nearest-neighbour upscaled, with optional per-image titles."""
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, t in zip(axes.flat, images, list(titles) + [""] * (len(images) - len(titles))):
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(t, fontsize=7)
    if title:
        fig.suptitle(title)
    if path:
        save(fig, path)
    return fig


def plot_reliability(targets, scores, path=None, bins=15, title="reliability diagram"):
    """Mean P(open) vs observed open rate per score bin (the diagonal is perfect calibration); bar = count."""
    targets, scores = np.asarray(targets, dtype=float), np.asarray(scores, dtype=float)
    which = np.clip((scores * bins).astype(int), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    mean_p = [scores[which == b].mean() for b in used]
    rate = [targets[which == b].mean() for b in used]
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    ax.plot(mean_p, rate, "o-", label="model")
    ax.set(ylabel="observed open rate", title=title)
    ax.legend()
    ax_n.bar((np.arange(bins) + 0.5) / bins, np.bincount(which, minlength=bins), width=0.9 / bins)
    ax_n.set(xlabel="predicted P(open)", ylabel="images", yscale="log")
    for a in (ax, ax_n):
        a.grid(alpha=0.3)
    if path:
        save(fig, path)
    return fig
