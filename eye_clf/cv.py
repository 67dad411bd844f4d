"""Stratified k-fold cross-validation: out-of-fold P(open) and per-fold metrics with a 95% interval."""
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import train_test_split

from . import data, metrics
from .train import TrainConfig, fit, scores


def cross_val_predict(images, targets, cfg=TrainConfig(), folds=5, seed=0, progress=True):
    """Train one model per fold; each test fold is predicted by the model that never saw it.

    Inside each fold 15% of the training part (stratified) is the validation set that picks the
    best-validation-loss epoch; the test fold is used only for scoring. Returns ``(oof_proba, per_fold)``
    where per_fold is a DataFrame of the fold metrics (see metrics.summary), epochs trained and ``eer_tta``,
    the EER of the same model with mirror averaging.
    """
    oof = np.full(len(targets), np.nan)
    rows = []
    for k, (rest, test) in enumerate(data.kfold(targets, folds, seed)):
        train, val = train_test_split(rest, test_size=0.15, stratify=targets[rest], random_state=seed)
        model, history = fit(images, targets, train, val, cfg, progress=progress)
        oof[test] = scores(model, images[test], tta=cfg.tta)
        rows.append(dict(fold=k, epochs=len(history), seconds=sum(r["seconds"] for r in history),
                         **metrics.summary(targets[test], oof[test]),
                         eer_tta=metrics.eer(targets[test], scores(model, images[test], tta=True))[0]))
    return oof, pd.DataFrame(rows)


def interval(values, level=0.95):
    """Mean and the half-width of its t-distribution confidence interval."""
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return float(v.mean()), float(half)


def report(per_fold):
    """One-line summary: mean ± 95% half-interval of EER, accuracy, AUC and ECE over folds."""
    parts = []
    for col in ("eer", "accuracy", "auc", "ece"):
        m, h = interval(per_fold[col])
        parts.append(f"{col} {100 * m:.2f} ± {100 * h:.2f}%" if col != "auc" else f"auc {m:.4f} ± {h:.4f}")
    return ", ".join(parts)
