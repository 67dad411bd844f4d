"""Figures: training curves, method comparison and image grids (written atomically as PNG)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
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
