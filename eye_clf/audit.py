"""Label audit: out-of-fold P(open) from k-fold models (or a given CSV), then cleanlab ranks the labels that are
most likely wrong into a review list that the studio opens as a queue (``python -m eye_clf label --review``)."""
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from . import data, metrics
from .cv import cross_val_predict
from .data import LabelError
from .train import ConfigError, TrainConfig


def labeled(images_dir, labels):
    """Targets and names of the labeled rows of a labels file (blank and unsure rows are left out).

    Read by ``data.read_labels`` (partial): every labeled row's image must be a file inside ``images_dir``; the
    images themselves are read only when the audit trains (``load_images``)."""
    df = data.read_labels(labels, images_dir, partial=True)
    df = df[df["target"].notna()]
    if df["target"].nunique() < 2:
        raise LabelError(f"{labels}: the audit needs labeled images of both classes")
    return df["target"].to_numpy(int), df["img_name"].tolist()


def load_images(images_dir, names):
    """The images ``names`` of ``images_dir``, as an N x 24 x 24 uint8 array."""
    return np.stack([data.load_image(Path(images_dir) / n) for n in names])


def read_oof(path, names):
    """Out-of-fold P(open) for ``names`` from a CSV with columns img_name, p_open."""
    df = data.read_sheet(path, "out-of-fold predictions")
    if {"img_name", "p_open"} - set(df.columns):
        raise ValueError(f"{path}: needs columns img_name and p_open; found {list(df.columns)}")
    if named := data.name_problems(df["img_name"]):
        raise LabelError.rows(path, list(named.values()))
    p = df.set_index("img_name")["p_open"]
    missing = [n for n in names if n not in p.index]
    if missing:
        raise ValueError(f"{path}: no p_open for {len(missing)} labeled image(s), e.g. {missing[:3]}")
    raw = p.loc[names]
    p = pd.to_numeric(raw, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)))
    if len(bad):
        wrong = set(raw.index[bad])
        shown = [f"row {r} ({n}): {v!r}" for r, n, v in zip(df.index, df["img_name"], df["p_open"]) if n in wrong]
        raise ValueError(f"{path}: p_open must be numbers in 0..1; {len(bad)} {'is' if len(bad) == 1 else 'are'} "
                         f"not, e.g. {', '.join(shown[:3])}")
    return p


def label_quality(targets, p_open):
    """cleanlab's self-confidence of each label: the out-of-fold probability of the given label (low: suspicious)."""
    probs = np.column_stack([1 - np.asarray(p_open, dtype=float), p_open])
    return get_label_quality_scores(np.asarray(targets, dtype=int), probs, method="self_confidence")


def review_list(names, targets, p_open):
    """Likely label errors, most suspicious first.

    cleanlab's ``find_label_issues`` (confident learning) on out-of-fold P(open) picks the issues; they are ranked
    by self-confidence, the out-of-fold probability of the given label (``score``: low = suspicious).
    Returns a DataFrame img_name, target (the given label), p_open, rank (1 = most suspicious), score.
    """
    targets, p_open = np.asarray(targets, dtype=int), np.asarray(p_open, dtype=float)
    probs = np.column_stack([1 - p_open, p_open])
    idx = find_label_issues(targets, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    score = label_quality(targets, p_open)
    return pd.DataFrame({"img_name": np.asarray(names, dtype=object)[idx], "target": targets[idx],
                         "p_open": p_open[idx], "rank": np.arange(1, len(idx) + 1), "score": score[idx]})


def check_config(cfg):
    """Refuse (ConfigError) the recipe fields the audit's CV cannot train with."""
    if cfg.soft_labels:
        raise ConfigError("soft_labels", "the audit judges the labels file alone, not the extra annotators' labels")
    if cfg.distill:
        raise ConfigError("distill", "the audit's CV trains no teachers")


def audit(images_dir, labels, oof=None, cfg=None, folds=5, progress=True, fold_dir=None):
    """Audit a labels file: returns ``(review_list, names, targets, p_open)``.

    ``oof``: a CSV of out-of-fold P(open) (img_name, p_open); without it ``folds`` models are trained with
    ``cfg`` (default: the shipped recipe; each image is scored by the model that did not train on it; soft labels
    and distillation are refused: check_config), each fold kept in ``fold_dir`` if given, so that a rerun resumes
    (see ``cv.cross_val_predict``).
    """
    cfg = cfg or TrainConfig()
    check_config(cfg)
    targets, names = labeled(images_dir, labels)
    if oof is not None:  # nothing is trained, so no image is read
        p_open = read_oof(oof, names)
        auc = metrics.auc(targets, p_open)
        if auc < 0.5:  # worse than chance: the column holds P(closed), or labels 1 = closed
            raise ValueError(f"{oof}: p_open ranks the labels backwards (AUC {auc:.3f} "
                             "against them): it must be P(open), with target 1 = open; is it P(closed)?")
    else:
        p_open, _ = cross_val_predict(load_images(images_dir, names), targets, cfg, folds, 0, progress,
                                      fold_dir=fold_dir)
    return review_list(names, targets, p_open), names, targets, p_open
