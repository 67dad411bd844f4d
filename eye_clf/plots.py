"""Figures: training curves, method comparison, image grids, the reliability diagram and the learning curve
(written atomically as PNG). Rates are labelled in percent, log axes at 1-2-5 steps."""
import matplotlib.pyplot as plt  # the caller's backend (a notebook's inline one; headless: Agg)
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .files import atomic_write
from .metrics import calibration_bins

PANELS = (("loss", "BCE loss"), ("accuracy", "accuracy (threshold 0.5)"), ("eer", "EER"))


def save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return fig


def percent(v, _=None):
    """Tick label of a 0..1 rate in percent: 0.05 -> "5%"."""
    return f"{100 * v:.4g}%"


def log_ticks(ax, label=lambda v, _: f"{v:g}"):
    """Log-scale y axis with ticks at 1-2-5 steps and plain labels (not the "4x10^-1" of unlabelled decades). A
    rate of 0 (a perfect epoch) is drawn falling off the bottom edge, not left out as a gap in the line."""
    ax.set_yscale("log", nonpositive="clip")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _panels(title, smoothing=0):
    """One row of the three PANELS with the figure title above the panel titles (constrained layout); the loss is
    against labels smoothed by ``smoothing`` (targets s/2 and 1 - s/2), as the recipe trains and validates."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for ax, (key, label) in zip(axes, PANELS):
        ax.set(xlabel="epoch", title=f"{label} (labels smoothed by {smoothing:g})" if key == "loss" and smoothing
               else label)
        if key == "accuracy":
            ax.yaxis.set_major_formatter(FuncFormatter(percent))
        elif key == "eer":
            log_ticks(ax, percent)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, axes


def plot_history(history, path=None, title="training history", keep_last=False, smoothing=0):
    """Loss, accuracy and EER per epoch, train vs validation; the epoch whose weights this fit kept is marked (the
    best-val-loss one, or with ``keep_last`` the last; a refit after it keeps the weights of its own last epoch)."""
    h = pd.DataFrame(history)
    kept = h["epoch"].iloc[-1] if keep_last else h.loc[h["val_loss"].idxmin(), "epoch"]
    fig, axes = _panels(title, smoothing)
    for ax, (key, _) in zip(axes, PANELS):
        ax.plot(h["epoch"], h[f"train_{key}"], label="train")
        ax.plot(h["epoch"], h[f"val_{key}"], label="validation")
        ax.axvline(kept, color="grey", ls=":", label=f"kept: last epoch ({kept})" if keep_last
                   else f"best val loss (epoch {kept})")
    axes[0].legend()
    if path:
        save(fig, path)
    return fig


def plot_comparison(histories, path=None, title="method comparison (validation)"):
    """Validation loss, accuracy and EER per epoch for several runs: ``{name: history}``."""
    fig, axes = _panels(title)
    for name, history in histories.items():
        h = pd.DataFrame(history)
        for ax, (key, _) in zip(axes, PANELS):
            ax.plot(h["epoch"], h[f"val_{key}"], label=name)
    axes[0].legend(fontsize=8)
    if path:
        save(fig, path)
    return fig


def image_grid(images, titles=(), path=None, cols=10, title=None, targets=None, p_open=None):
    """Show uint8 24x24 images in a grid, nearest-neighbour upscaled. Each caption reads "label: open" (the
    reference label, from ``targets``), "P(open)=0.93" (the model's score, from ``p_open``), then ``titles``."""
    parts = [[f"label: {'open' if t else 'closed'}" for t in targets] if targets is not None else [],
             [f"P(open)={p:.2f}" for p in p_open] if p_open is not None else [], list(titles)]
    captions = ["\n".join(c[i] for c in parts if i < len(c)) for i in range(len(images))]
    height = 1.0 + 0.13 * max((c.count("\n") + 1 for c in captions if c), default=0)
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * height), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, caption in zip(axes.flat, images, captions):
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    if path:
        save(fig, path)
    return fig


def plot_reliability(targets, scores, path=None, bins=15, title="reliability diagram"):
    """Mean P(open) vs observed open rate per score bin (``metrics.calibration_bins``, the bins of
    ``metrics.ece``; the diagonal is perfect calibration); below, the number of images per bin."""
    mean_p, rate, count = calibration_bins(targets, scores, bins)
    used = count > 0
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, height_ratios=(3, 1),
                                   layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    ax.plot(mean_p[used], rate[used], "o-", label="model")
    ax.set(ylabel="observed open rate", title=title)
    ax.legend()
    ax_n.bar((np.arange(bins) + 0.5) / bins, count, width=0.9 / bins)
    ax_n.set(xlabel="predicted P(open)", ylabel="images")
    log_ticks(ax_n)
    for a in (ax, ax_n):
        a.grid(alpha=0.3)
    if path:
        save(fig, path)
    return fig


def plot_learning_curve(curves, path=None, goal=None, title="learning curve (5-fold CV)"):
    """EER against the number of training images (log axis: doublings are even steps): ``{label: rows}``, each
    row (images, mean EER, half-width of its interval) drawn as a point with an error bar, the curves nudged
    sideways so that the bars stay apart; ``goal``: a target EER as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ticks = set()
    for i, (label, rows) in enumerate(curves.items()):
        n, mean, half = np.asarray(rows, dtype=float).T
        ticks |= set(n.astype(int).tolist())
        ax.errorbar(n * 1.02 ** (i - (len(curves) - 1) / 2), mean, yerr=half, marker="o", capsize=3, label=label)
    if goal is not None:
        ax.axhline(goal, color="grey", ls="--", label=f"goal ({percent(goal)})")
    ax.set(xscale="log", xlabel="training images per fold", ylabel="EER on the test fold", title=title)
    ax.set_xticks(sorted(ticks), [f"{t:,}" for t in sorted(ticks)], rotation=45, fontsize=8)  # close ticks stay apart
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(percent))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if path:
        save(fig, path)
    return fig
