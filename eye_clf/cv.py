"""Stratified k-fold cross-validation: out-of-fold P(open) and per-fold metrics with a 95% interval.

With ``fold_dir`` every fold writes ``fold{k}.json`` (and the fold's model as ``fold{k}.pt``) as soon as it
finishes, and a rerun resumes: folds already on disk with the same config, data, folds and device type are read,
not retrained.
"""
import hashlib
import json
import reprlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from scipy import stats
from sklearn.model_selection import train_test_split

from . import data, metrics
from .files import atomic_write, provenance, write_json
from .models import load_checkpoint, scores
from .train import TrainConfig, augmented_views, checkpoint, device_of, fit_recipe, save_checkpoint, view_proba


def _view_proba(teacher, views):
    """``view_proba`` of one teacher checkpoint, kept beside it (keyed by the views' and the checkpoint's content)
    for the next student."""
    tag = hashlib.sha256(views.numpy().tobytes() + Path(teacher).read_bytes()).hexdigest()[:16]
    path = Path(teacher).with_name(f"{Path(teacher).stem}.views-{tag}.npy")
    if not path.exists():
        p = view_proba([load_checkpoint(teacher)[0]], views)

        def save(tmp):
            with open(tmp, "wb") as f:
                np.save(f, p)
        atomic_write(path, save)
    try:
        p = np.load(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: unreadable teacher scores ({err}); delete the file to recompute them") from None
    if p.shape != tuple(views.shape[:2]):
        raise ValueError(f"{path}: teacher scores of shape {p.shape}, expected {tuple(views.shape[:2])}; delete the "
                         "file to recompute them")
    return p


def _fold(images, targets, rest, test, cfg, progress, teachers, train_fraction, soft, trainable, prune_folds):
    """Train on ``rest`` (minus its validation part), score the test fold; returns (row, checkpoint dict of the fold's
    model, with its threshold and the images it saw). ``teachers``: checkpoint files to distil from."""
    train, val = data.validation_split(rest, targets, cfg.val_fraction, cfg.seed)
    if train_fraction < 1:  # learning curves: a stratified part of the training images, the same validation part
        train = train_test_split(train, train_size=train_fraction, stratify=targets[train], random_state=cfg.seed)[0]
    if trainable is not None:
        train = train[trainable[train]]
    pruned, prune_seconds = train[:0], 0.0
    if prune_folds:  # confident learning on out-of-fold P(open) of the training part alone
        inner, inner_folds = cross_val_predict(images[train], targets[train], cfg, prune_folds, cfg.seed, False)
        issues = find_label_issues(targets[train], np.column_stack([1 - inner, inner]), n_jobs=1)
        pruned, train, prune_seconds = train[issues], train[~issues], float(inner_folds["seconds"].sum())
    bank = None
    if teachers and cfg.teacher_views:
        views = augmented_views(images[train], cfg)
        bank = views, np.mean([_view_proba(t, views) for t in teachers], axis=0)
    teachers = [load_checkpoint(t)[0] for t in teachers]
    refit_val = val if trainable is None else val[trainable[val]]  # the validation images it may train on
    model, histories, _, extras = fit_recipe(images, targets, train, val, cfg, progress, teachers, soft, bank,
                                             refit_val)
    history, val_threshold = histories[0], extras["threshold"]
    best, seconds = min(history, key=lambda r: r["val_loss"]), sum(r["seconds"] for h in histories for r in h)
    p, p_tta = scores(model, images[test]), scores(model, images[test], tta=True)
    own = p_tta if cfg.tta else p  # what the checkpoint predicts
    row = dict(epochs=len(history), best_epoch=len(history) if cfg.keep_last else best["epoch"], seconds=seconds,
               temperature=float(model.temperature), **metrics.summary(targets[test], own),
               val_threshold=val_threshold,
               accuracy_at_val_threshold=metrics.accuracy(targets[test], own, val_threshold),
               eer_tta=metrics.eer(targets[test], p_tta)[0], test_idx=test.tolist(), p=p.tolist(),
               p_tta=p_tta.tolist(), **({"pruned": pruned.tolist(), "prune_seconds": prune_seconds}
                                        if prune_folds else {}))
    return row, {**checkpoint(model, cfg, history=history), **extras}


# TrainConfig fields added after some folds ran, with the behaviour those folds had (for later fields the default).
BEFORE = dict(batch_augment=False, refit=False, tta=False)


def read_fold(path):
    """A fold file of ``cross_val_predict``; a ValueError names a damaged or foreign one."""
    try:
        row = json.loads(Path(path).read_text())
        if not (isinstance(row, dict) and {"fold", "key", "test_idx", "p"} <= set(row)
                and isinstance(row["key"], dict) and isinstance(row["key"].get("config"), dict)):
            raise ValueError("it lacks the fields fold, key (with its config), test_idx and p")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a fold file of eye_clf's CV ({err}); move it away to rerun") from None
    return row


def predicted(row):
    """A fold file's out-of-fold P(open) as its checkpoint predicts them: mirror-averaged if it uses TTA."""
    return row["p_tta"] if same_key(row["key"])["config"]["tta"] else row["p"]


def out_of_fold(rows, n, tta=False):
    """A finished CV's fold rows as two arrays over its ``n`` images: out-of-fold P(open) as each fold's checkpoint
    predicts it (mirror-averaged whatever the checkpoint does, with ``tta``) and the threshold of each image's fold
    (its validation EER point)."""
    p, threshold = np.full(n, np.nan), np.full(n, np.nan)
    for r in rows:
        p[r["test_idx"]], threshold[r["test_idx"]] = r["p_tta"] if tta else predicted(r), r["val_threshold"]
    return p, threshold


def same_key(key):
    """A fold's key with its config completed for fields added since it ran (BEFORE, else TrainConfig's defaults)
    and the device type it trained on (the CPU for folds from before that field: all of them ran there)."""
    return {"device": "cpu", **key, "config": asdict(TrainConfig.from_dict({**BEFORE, **key["config"]}))}


def key_difference(theirs, ours):
    """What tells a fold's key from this run's: "epochs 1 there, 2 here", config fields first."""
    def differ(a, b, fields):
        return [f"{f} {reprlib.repr(a.get(f))} there, {reprlib.repr(b.get(f))} here" for f in fields
                if a.get(f) != b.get(f)]
    config = differ(theirs.get("config", {}), ours.get("config", {}), {**theirs.get("config", {}), **ours["config"]})
    return "; ".join(config + differ(theirs, ours, [k for k in {**theirs, **ours} if k != "config"]))


def _same_scores(row, targets):
    """Whether a fold row's EER recomputes from its P(open) and ``targets`` (for rows without a fingerprint)."""
    k, idx = row["key"], np.asarray(row["test_idx"])
    if (k["n"], k["n_open"]) != (len(targets), int(np.sum(targets))):
        return False
    try:
        return abs(metrics.eer(targets[idx], np.asarray(predicted(row)))[0] - row["eer"]) < 1e-9
    except ValueError:  # one class in the test fold: not this data's fold
        return False


def check_data(rows, targets, here, name):
    """Refuse fold rows of run ``name`` made on other data than ``targets`` of fingerprint ``here`` (``data_id``:
    changed, added or reordered images or labels), whose test indices would point at other images. Rows from
    before the fingerprint must have the same image and open counts, and their EER must recompute exactly from
    their P(open) and these targets."""
    targets = np.asarray(targets)
    for r in rows:
        if not (r["key"]["data"] == here if "data" in r["key"] else _same_scores(r, targets)):
            raise ValueError(f"{name}: fold {r['fold']} was made on other data (images or labels changed or "
                             "reordered since), and so were the run's other folds, which trained on those images: "
                             "rerun the whole CV")


def inputs_id(teacher_dirs, soft, trainable, k):
    """A fingerprint of fold ``k``'s other training inputs (its teachers' fold-k predictions, soft targets, trainable
    mask), or None without any: a resumed run refuses a fold made before one of them changed."""
    if not teacher_dirs and soft is None and trainable is None:
        return None
    h = hashlib.sha256()
    for d in teacher_dirs:
        f = Path(d) / f"fold{k}.json"
        h.update(json.dumps(read_fold(f)["p"]).encode() if f.exists() else b"missing")
    for a in (soft, trainable):
        h.update(b"none" if a is None else np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def data_id(images, targets):
    """A fingerprint of the images, in their order, and their targets: a fold file's test indices and P(open)
    belong to exactly this data."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(targets, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


class TeacherSawStudent(ValueError):
    """A teacher's fold model may have seen the student's validation or test images."""


def check_teachers(teacher_dirs, student):
    """Refuse (TeacherSawStudent) teacher CVs whose fold models may have seen the student's validation or test
    images: a teacher needs the student's data, folds, seed and validation fraction, and no refit (which trains on the
    validation part too); a folder without fold results is a ValueError. ``student``: the student's fold key (see
    cross_val_predict)."""
    for d in map(Path, teacher_dirs):
        rows = sorted(d.glob("fold*.json"))
        if not rows:
            raise ValueError(f"{d}: no fold results; a teacher is a finished CV run")
        for row in rows:  # every fold: one made by another run would reach the student as well
            t = same_key(read_fold(row)["key"])
            pairs = [("folds", t["folds"], student["folds"]), ("fold seed", t["seed"], student["seed"]),
                     ("images", t["n"], student["n"]), ("open images", t["n_open"], student["n_open"]),
                     ("data", t.get("data", student["data"]), student["data"])]  # older folds: no fingerprint
            pairs += [(f, t["config"][f], student["config"][f]) for f in ("seed", "val_fraction")]
            wrong = [f"{what} {got!r}, the student's {want!r}" for what, got, want in pairs if got != want]
            wrong += ["refit, which trains on the validation part"] if t["config"]["refit"] else []
            if wrong:
                raise TeacherSawStudent(f"{row}: its fold model may have seen the student's validation or test "
                                        f"images ({'; '.join(wrong)})")


def check_fold_model(fold_json, images, test=None):
    """Refuse a fold's model (``foldK.pt`` beside ``foldK.json``; untracked, so possibly missing or from another
    run) that does not reproduce the out-of-fold P(open) its fold file records, or (``test``: the test fold it must
    have held out) whose fold is another one."""
    fold_json = Path(fold_json)
    pt = fold_json.with_suffix(".pt")
    if not fold_json.is_file():
        raise ValueError(f"{fold_json}: no such fold result; finish that CV run first")
    if not pt.is_file():
        raise ValueError(f"{pt}: fold model missing (only the fold files are committed); rerun that fold")
    row = read_fold(fold_json)
    if test is not None and row["test_idx"] != list(test):
        raise ValueError(f"{fold_json}: its test fold is not this split's (made by another scikit-learn?), so its "
                         "model may have trained on these test images; rerun that CV")
    model, _ = load_checkpoint(pt)
    cuda = same_key(row["key"])["device"] == "cuda"
    model.to(device_of("auto") if cuda else "cpu")  # scored where it trained, if this machine has CUDA
    gap = np.abs(scores(model, images[row["test_idx"]], tta=model.tta) - np.asarray(predicted(row))).max()
    # another training differs by far more (0.27-0.63 on AVX512 against AVX2); a Lite2 trained on an H200 scored up
    # to 0.007 apart there (TF32 convolutions) and on the CPU
    if gap > (2e-2 if cuda else 1e-3):
        raise ValueError(f"{pt} does not reproduce {fold_json.name}'s P(open) (max difference {gap:.2g}); rerun "
                         "that fold")


def _check_arguments(cfg, targets, splits, trainable, only, prune_folds):
    """Refuse, before any fold trains, arguments that do not go together and folds whose training part cannot be
    split into training and validation images."""
    if trainable is not None and trainable.shape != (len(targets),):
        raise ValueError(f"trainable: a mask of {len(targets)} images expected, got shape {trainable.shape}")
    if prune_folds < 0 or prune_folds == 1:
        raise ValueError(f"prune_folds: 0 (no pruning) or an inner fold count of 2 or more, got {prune_folds}")
    if prune_folds and (cfg.soft_labels or cfg.distill):
        raise ValueError("prune_folds: the pruning CV trains on the labels alone; not with soft labels or teachers")
    if prune_folds and cfg.refit:
        raise ValueError("prune_folds: the refit would train on the validation part, which the pruning CV does not "
                         "check; use refit=False")
    if only is not None and not set(only) <= set(range(len(splits))):
        raise ValueError(f"only: fold indices in 0..{len(splits) - 1} expected, got {sorted(only)}")
    for k, (rest, _) in enumerate(splits):
        try:
            data.validation_split(rest, targets, cfg.val_fraction, cfg.seed)
        except ValueError as err:  # its counts are those of the fold's training part, not of the whole file
            raise ValueError(f"fold {k} of {len(splits)}, its training part ({len(rest)} of the {len(targets)} "
                             f"images): {err} (--val-fraction), or use more folds (larger training parts)") from None


def _check_resumed(row, key, path, k, test, targets):
    """Refuse fold ``k``'s file on disk when another config, data, device or split made it."""
    old = {f: key[f] for f in ("data", "inputs") if f in key}  # folds written before these fingerprints existed
    if {**old, **same_key(row["key"])} != key:  # are matched on the rest of their key
        raise ValueError(f"{path} was made with another config, data or device "
                         f"({key_difference({**old, **same_key(row['key'])}, key)}); move it away to rerun")
    if "data" not in row["key"]:
        check_data([row], targets, key["data"], path.parent)
    if row["test_idx"] != test.tolist():
        raise ValueError(f"{path}: its test fold is not fold {k} of this split (made by another scikit-learn?); "
                         "move it away to rerun")


def cross_val_predict(images, targets, cfg=None, folds=5, seed=0, progress=True, fold_dir=None, teacher_dirs=(),
                      train_fraction=1.0, soft=None, trainable=None, only=None, prune_folds=0):
    """Train one model per fold; each test fold is predicted by the model that never saw it.

    Inside each fold ``cfg.val_fraction`` of the training part (stratified) is the validation set that picks the
    best-validation-loss epoch, the temperature and the threshold (with ``cfg.refit`` the refit on the whole training
    part is scored; ``best_epoch`` stays the validated fit's); the test fold is used only for scoring. Returns
    ``(oof, per_fold)``: out-of-fold P(open) (with the checkpoint's own TTA setting) and a DataFrame of fold
    metrics of those predictions (see metrics.summary), epochs, seconds, ``eer_tta`` (EER with mirror averaging).

    ``teacher_dirs``: fold folders of finished CVs on the same folds; fold k's student distils from their fold-k
    models, which saw only that fold's training part (the same split, so not its validation part either:
    ``check_teachers`` refuses any other).
    ``train_fraction`` < 1 trains on that stratified part of each fold's training images (learning curves).
    ``soft``: the training targets of ``cfg.soft_labels`` (see data.soft_targets); folds and scores use ``targets``.
    ``trainable``: a boolean mask; images outside it are left out of the training parts and the refit (the folds,
    validation parts and test folds stay as they are).
    ``prune_folds`` = k > 0 (without ``cfg.refit``): before each fold trains, a k-fold CV of ``cfg`` on that fold's
    training part (and nothing else) gives out-of-fold P(open), cleanlab's ``find_label_issues`` flags the likely
    label errors, and the fold trains without them (its row lists them as ``pruned``, with the inner CV's
    ``prune_seconds``).
    ``only``: train just these fold indices (folds of others are read from ``fold_dir`` if there, else left out of
    the result, their out-of-fold P(open) NaN), so that several processes can share one CV, each on its own folds.
    """
    cfg = cfg or TrainConfig()
    trainable = None if trainable is None else np.asarray(trainable, bool)
    splits = data.kfold(targets, folds, seed)
    _check_arguments(cfg, targets, splits, trainable, only, prune_folds)
    oof = np.full(len(targets), np.nan)
    run_key = dict(config=asdict(cfg), folds=folds, seed=seed, n=len(targets), n_open=int(np.sum(targets)),
                   data=data_id(images, targets), device=device_of(cfg.device).type,  # CUDA trains in bfloat16
                   **({"teachers": [Path(d).name for d in teacher_dirs]} if teacher_dirs else {}),
                   **({"train_fraction": train_fraction} if train_fraction < 1 else {}),
                   **({"untrainable": int(np.sum(~trainable))} if trainable is not None else {}),
                   **({"prune_folds": prune_folds} if prune_folds else {}))
    # the code this run loaded: later commits do not change a running process
    rows, prov = [], provenance(device_of(cfg.device))
    for k, (rest, test) in enumerate(splits):
        path = Path(fold_dir) / f"fold{k}.json" if fold_dir else None
        row = read_fold(path) if path and path.exists() else None
        inputs = inputs_id(teacher_dirs, soft, trainable, k)
        key = {**run_key, **({"inputs": inputs} if inputs else {})}
        if row is not None:
            _check_resumed(row, key, path, k, test, targets)
        if row is None and only is not None and k not in only:
            continue
        check_teachers(teacher_dirs, key)  # a resumed fold too: its teachers may have been replaced since
        if row is None:
            for d in teacher_dirs:
                check_fold_model(Path(d) / f"fold{k}.json", images, test.tolist())
            teachers = [Path(d) / f"fold{k}.pt" for d in teacher_dirs]
            row, ckpt = _fold(images, targets, rest, test, cfg, progress, teachers, train_fraction, soft, trainable,
                              prune_folds)
            row = dict(fold=k, key=key, **row, provenance=prov)
            if path:
                save_checkpoint(ckpt, path.with_suffix(".pt"))
                write_json(path, row)
        oof[test] = predicted(row)
        rows.append({c: v for c, v in row.items() if c not in ("key", "test_idx", "p", "p_tta", "provenance",
                                                               "pruned")})
    return oof, pd.DataFrame(rows)


def interval(values, level=0.95):
    """Mean and the half-width of its t-distribution confidence interval."""
    v = np.asarray(values, dtype=float)
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return float(v.mean()), float(half)


def report(per_fold):
    """One-line summary: mean ± 95% half-interval over folds of the EER, the accuracy at each fold's validation
    threshold, AUC and ECE."""
    parts = []
    for col, name in (("eer", "EER"), ("accuracy_at_val_threshold", "accuracy at the validation threshold"),
                      ("auc", "AUC"), ("ece", "ECE")):
        m, h = interval(per_fold[col])
        parts.append(f"{name} {100 * m:.2f} ± {100 * h:.2f}%" if col != "auc" else f"AUC {m:.4f} ± {h:.4f}")
    return ", ".join(parts)
