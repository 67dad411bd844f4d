"""The main job: train the shipped recipe on every label, write a run folder; ``ship`` promotes a run.

A run trains on all labelled images except a stratified ``cfg.val_fraction`` validation part, which only picks the
best-validation-loss epoch, the temperature and the decision threshold (with ``cfg.refit`` a second fit on all of
them follows, see train.refit). It writes into its own folder
(``runs/<name>/``): the checkpoint, the history, the curves and ``run.json``. The shipped model
(``eye_clf/shipped/``, linked from ``plots_checkpoints/``) changes only through ``ship``. Quality figures of a recipe
come from cross-validating it (``scripts/cv_ablations.py``): the validation part picked the epoch, so its numbers
are optimistic.
"""
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import cv, data, metrics
from .files import atomic_write_all, checkout, is_checkout, provenance, save_history, sha256, write_json
from .models import load_checkpoint, scores
from .plots import plot_history
from .predict import SHIPPED  # every shipped path here is built from it: pointing it elsewhere moves them all
from .train import TrainConfig, checkpoint, device_of, fit_recipe, save_checkpoint

FIGURES = data.REPO_ROOT / "plots_checkpoints"
CV_RESULTS = data.REPO_ROOT / "results" / "cv"
# The teachers a distilling recipe learns from (the config cross-validated as results/cv/lite0_imagenet_e12); each
# is trained on the student's own split (same seed and val_fraction) without a refit, so none sees the student's
# validation part.
TEACHERS = {"lite0_imagenet": TrainConfig(arch="efficientnet_lite0", weights="imagenet", input_size=64, epochs=12,
                                          lr=1e-3, patience=12, batch_augment=False, refit=False, tta=False)}


def auto_threads():
    """Torch threads for training: the cores that other processes leave idle (1-minute load average; Windows has
    none: every core), at least 1. Oversubscribed cores make training many times slower, not a little."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, cores - round(load))


def smoke_mode():
    """The notebooks' smoke switch: ``EYE_CLF_SMOKE`` "1" is a smoke run, unset, empty or "0" a full one. Any other
    value is refused, so that a typo cannot start a full run that rewrites the committed figures and weights."""
    value = os.environ.get("EYE_CLF_SMOKE", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f'EYE_CLF_SMOKE={value!r}: set it to "1" for a smoke run, or "0" or nothing for a full run')
    return value == "1"


def split(targets, cfg):
    """The run's (train, validation) indices: a stratified ``cfg.val_fraction`` held out, seed ``cfg.seed``."""
    return data.validation_split(np.arange(len(targets)), targets, cfg.val_fraction, cfg.seed)


def compare_with_shipped(images, targets, val_idx):
    """The shipped model's validation metrics on this run's validation images that it never trained on."""
    path = SHIPPED / "eye_clf.pt"
    if not path.is_file():
        return None
    try:
        model, ckpt = load_checkpoint(path)
    except (ValueError, OSError) as err:  # e.g. made by code with other preprocessing: the run is kept all the same
        warnings.warn(f"not compared with the shipped model: {err}")
        return None
    if "training_images" not in ckpt:  # an older checkpoint cannot tell which images it has seen
        return None
    seen = set(ckpt["training_images"])
    unseen = np.array([i for i in val_idx if data.image_hash(images[i]) not in seen], dtype=int)
    if len(np.unique(targets[unseen])) < 2:
        return None
    return dict(images=len(unseen), **metrics.summary(targets[unseen], scores(model, images[unseen], tta=model.tta)))


def cv_rows(name, results=CV_RESULTS):
    """The per-fold rows of the finished CV ``results/cv/<name>/`` (as many folds as its fold 0 was one of), or None
    while a fold is missing."""
    first = Path(results) / name / "fold0.json"
    if not first.exists():
        return None
    paths = [first.with_name(f"fold{k}.json") for k in range(cv.read_fold(first)["key"]["folds"])]
    return [cv.read_fold(p) for p in paths] if all(p.exists() for p in paths) else None


def cv_of(cfg, results=CV_RESULTS, images=None, targets=None, folds=5):
    """The finished ``folds``-fold CV (fold seed 0, as every committed run) of exactly this config (whatever its
    ``device`` field) on all its training images and without teachers (not a learning-curve, pruned,
    undisputed-only or distilled run: a distilled run's teachers are its own) as (run name, per-fold rows), or None;
    given ``images`` and ``targets``, only a CV of that data (cv.check_data)."""
    here = None if targets is None else cv.data_id(images, targets)
    for folder in sorted(Path(results).glob("*/")):
        rows = cv_rows(folder.name, results)
        keys = [cv.same_key(r["key"]) for r in rows] if rows else []
        if rows and all(recipe(k["config"]) == recipe(asdict(cfg))
                        and (k["folds"], k["seed"]) == (folds, 0)
                        and not {"train_fraction", "untrainable", "prune_folds", "teachers"} & set(k)
                        for k in keys) and (here is None or _of_data(rows, targets, here)):
            return folder.name, rows
    return None


def recipe(config):
    """A config dict without ``device`` (auto or a named one: the same recipe)."""
    return {k: v for k, v in config.items() if k != "device"}


def _of_data(rows, targets, here):
    try:
        cv.check_data(rows, targets, here, "")
        return True
    except ValueError:
        return False


def teacher_names(cfg):
    return list(TEACHERS) if cfg.distill else []


def teachers_for(paths, images, val_idx):
    """The teacher checkpoints' models, refused unless each one's weights never learnt the student's validation
    images (``val_idx``), which pick the student's epoch, temperature and threshold: the teacher must have held
    them out as its own validation part, without refit (same data, seed and validation fraction as the student)."""
    student_val = {data.image_hash(images[i]) for i in val_idx}
    models = []
    for path in paths:
        model, ckpt = load_checkpoint(path)
        if ckpt["config"].get("refit"):
            why = "refit, which trains on the validation images"
        elif "validation_images" not in ckpt:
            why = "an older checkpoint that does not record its validation images"
        else:
            learnt = set(ckpt["training_images"]) - set(ckpt["validation_images"])
            leaked = len(learnt & student_val)
            why = f"its weights learnt {leaked} of the student's {len(student_val)} validation images" if leaked else ""
        if why:
            raise ValueError(f"{path}: not trained on the student's split ({why}); train the teacher with the "
                             "student's data, --seed and --val-fraction and --no-refit")
        models.append(model)
    return models


def check_outside_shipped(out, name="out", what="the run"):
    """``out`` as a Path, refused when it is, or is inside, the folders of the shipped model and, in a checkout, its
    curves (an installed eye_clf has none: ``ship`` refuses to run there); the error names it as ``name`` and what is
    written as ``what``. The command line's argparse types apply the same rule before any work."""
    out = Path(out)
    if any(out.resolve().is_relative_to(d.resolve()) for d in (SHIPPED, *([FIGURES] if checkout() else []))):
        raise ValueError(f"{name}: {out} is in the folders of the shipped model and its curves, which change only "
                         f"through `eye-clf ship RUN_FOLDER`; write {what} elsewhere")
    return out


def new_run_folder():
    """The default run folder of a training: runs/train-<date>-<time> in the checkout (else the current folder)."""
    return data.REPO_ROOT / "runs" / datetime.now().strftime("train-%Y%m%d-%H%M%S")


def train_run(cfg=None, root=None, labels=None, out_dir=None, limit=None, progress=True, teachers=(),
              images_dir=None):
    """Train ``cfg`` (default: the shipped recipe) on the labelled data (``data.load_dataset``: the data folder
    ``root``, or the image folder ``images_dir`` with its ``labels``) and write the run folder.

    ``teachers``: checkpoint files of runs on the same split (same seed and val_fraction) to distil from; a
    distilling ``cfg`` without them first trains ``TEACHERS`` into ``<run folder>/teachers/``.

    Returns a dict with the model, history, validation metrics, the shipped model's metrics on the same unseen
    validation images, indices, seconds and the run folder.
    """
    cfg = cfg or TrainConfig()
    prov = provenance(device_of(cfg.device))  # the code this run loaded: later edits do not change a running process
    out = check_outside_shipped(out_dir or new_run_folder())
    if cfg.soft_labels:  # the annotations' images; refused before the teachers train or images are read
        data.check_annotated(root, images_dir)
    if cfg.distill and not teachers:
        teachers = [train_run(replace(t, seed=cfg.seed, val_fraction=cfg.val_fraction, refit=False), root, labels,
                              out / "teachers" / name, limit, progress,
                              images_dir=images_dir)["out"] / "eye_clf.pt"
                    for name, t in TEACHERS.items()]
    folder, labels = data.dataset_paths(root, labels, images_dir)
    images, targets, names = data.load_dataset(root, labels, limit=limit, images_dir=folder)
    source = dict(images=str(folder.resolve()), labels=str(Path(labels).resolve()), labels_sha256=sha256(labels),
                  n=len(targets), n_open=int(targets.sum()), data_id=cv.data_id(images, targets))
    train_idx, val_idx = split(targets, cfg)
    teacher_models = teachers_for(teachers, images, val_idx)
    t0 = time.perf_counter()
    soft = data.soft_targets(targets, names, root) if cfg.soft_labels else None
    model, histories, p_val, extras = fit_recipe(images, targets, train_idx, val_idx, cfg, progress, teacher_models,
                                                 soft)
    history, val = histories[0], metrics.summary(targets[val_idx], p_val)  # (of the validated fit)
    seconds = time.perf_counter() - t0
    shipped = compare_with_shipped(images, targets, val_idx)
    ckpt = checkpoint(model, cfg, dict(val=val, train_seconds=seconds, torch_threads=torch.get_num_threads()),
                      history, prov)
    ckpt.update(extras, teachers=[dict(file=str(t), sha256=sha256(t)) for t in teachers])
    save_checkpoint(ckpt, out / "eye_clf.pt")
    save_history(history, out / "history")
    plt.close(plot_history(history, out / "train_val_loss_metrics_history.png",
                           title=f"{cfg.arch} / {cfg.method} / weights: {cfg.weights or 'random init'}",
                           keep_last=cfg.keep_last, smoothing=cfg.label_smoothing))  # a file
    write_json(out / "run.json", dict(config=ckpt["config"], data=source, val=val, shipped_on_same_val=shipped,
                                      best_epoch=ckpt["best_epoch"], train_seconds=seconds,
                                      n_train=len(train_idx) + cfg.refit * len(val_idx), n_val=len(val_idx),
                                      provenance=prov),
               indent=1)
    return dict(model=model, history=history, val=val, shipped=shipped, seconds=seconds, images=images,
                targets=targets, names=names, split=(train_idx, val_idx), out=out)


def ship(run_dir):
    """Make a run the shipped model: its checkpoint and ONNX export into eye_clf/shipped/, its history and
    curves into plots_checkpoints/. Every file is written before any is replaced: a failure leaves the old set."""
    from .export import export_onnx

    if not is_checkout(SHIPPED.resolve().parent.parent):
        raise ValueError(f"ship replaces the model of an eye_clf checkout; this eye_clf is installed ({SHIPPED}), "
                         "so its shipped model stays as installed: predict with --checkpoint (or checkpoint=) instead")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}" if not run_dir.exists() else
                                f"not a folder: {run_dir} (ship takes the run folder that `train` wrote)")
    copies = [(run_dir / "eye_clf.pt", SHIPPED / "eye_clf.pt")] + [
        (run_dir / name, FIGURES / name) for name in ("history.csv", "history.json",
                                                      "train_val_loss_metrics_history.png")]
    missing = [str(src) for src, _ in copies if not src.is_file()]
    if missing:  # refuse an incomplete run folder or a broken checkpoint before replacing anything
        raise FileNotFoundError(f"not a complete run folder: missing {', '.join(missing)}")
    load_checkpoint(run_dir / "eye_clf.pt")
    with tempfile.TemporaryDirectory(dir=SHIPPED, prefix=".ship-") as tmp:  # a failed export replaces nothing
        graph = export_onnx(run_dir / "eye_clf.pt", Path(tmp) / "eye_clf.onnx")
        copies.insert(1, (graph, SHIPPED / "eye_clf.onnx"))  # the model's two files are moved one after the other
        atomic_write_all([(dst, lambda out, src=src: shutil.copyfile(src, out)) for src, dst in copies])
