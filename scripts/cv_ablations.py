"""5-fold cross-validated ablations of the training recipe (one change at a time from BASE).

    python scripts/cv_ablations.py baseline wide ...   # run these (each result cached in results/cv/NAME.json)
    python scripts/cv_ablations.py --ensemble a b ...  # CV of the average of cached runs' out-of-fold P(open)
    python scripts/cv_ablations.py --table             # rebuild results/cv_ablations.md from the cached runs

Each run: the same 5 stratified folds (seed 0) of the 4000 images; inside each fold 15% of the training part picks
the best-validation-loss epoch, the test fold only scores. Reported: mean ± 95% t-interval over folds.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eye_clf import data, metrics  # noqa: E402
from eye_clf.cv import cross_val_predict, interval  # noqa: E402
from eye_clf.train import TrainConfig, atomic_write  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "results"
BASE = dict(arch="eyenet", width=16, epochs=30, patience=10, lr=3e-3, augment=1.0, label_smoothing=0.0, tta=False,
            calibrate=False)
ABLATIONS = {
    "baseline": {},
    "no_augmentation": dict(augment=0.0),
    "strong_augmentation": dict(augment=1.5),
    "invert_augmentation": dict(invert=0.2),
    "label_smoothing_0.1": dict(label_smoothing=0.1),
    "wide_32": dict(width=32),
    "upsample_48px": dict(input_size=48),
    "dropout_0.3": dict(dropout=0.3),
    "epochs_60": dict(epochs=60, patience=15),
    "ls0.1+mirror_tta": dict(label_smoothing=0.1, tta=True, calibrate=True),
    "shipped_ls0.1+temperature": dict(label_smoothing=0.1, calibrate=True),
    "ls0.1+temperature+invert0.2": dict(label_smoothing=0.1, calibrate=True, invert=0.2),
    "plain_resnet18": dict(arch="resnet18", epochs=15, patience=5, lr=1e-3),
    "lite0_imagenet_finetune": dict(arch="efficientnet_lite0", weights="imagenet", input_size=64, epochs=12,
                                    patience=5, lr=1e-3),
    "lite0_imagenet_features": dict(arch="efficientnet_lite0", method="feature_extraction", weights="imagenet",
                                    input_size=64, epochs=15, patience=5, lr=1e-2),
}


def run(name, images, targets):
    cfg = TrainConfig(**{**BASE, **ABLATIONS[name]})
    oof, per_fold = cross_val_predict(images, targets, cfg, folds=5, seed=0)
    result = dict(name=name, change=ABLATIONS[name], config=vars(cfg), folds=per_fold.to_dict("records"),
                  pooled=metrics.summary(targets, oof), oof=oof.tolist())
    atomic_write(OUT / "cv" / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(result)))
    print(f"{name}: EER {100 * np.mean(per_fold['eer']):.2f}% (folds {np.round(100 * per_fold['eer'], 2).tolist()})",
          flush=True)


def ensemble(names, targets):
    """All runs share the folds, so averaging their out-of-fold P(open) is a CV of the averaged ensemble."""
    runs = [json.loads((OUT / "cv" / f"{n}.json").read_text()) for n in names]
    oof = np.mean([r["oof"] for r in runs], axis=0)
    folds = [dict(fold=k, epochs=sum(r["folds"][k]["epochs"] for r in runs),
                  seconds=sum(r["folds"][k]["seconds"] for r in runs),
                  **metrics.summary(targets[test], oof[test]), eer_tta=None)
             for k, (_, test) in enumerate(data.kfold(targets, 5, 0))]
    name = "ensemble(" + "+".join(names) + ")"
    result = dict(name=name, change={"average of": names}, config=None, folds=folds,
                  pooled=metrics.summary(targets, oof), oof=oof.tolist())
    atomic_write(OUT / "cv" / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(result)))
    print(f"{name}: EER {100 * np.mean([f['eer'] for f in folds]):.2f}%")


def table():
    rows = []
    paths = [OUT / "cv" / f"{n}.json" for n in ABLATIONS] + sorted((OUT / "cv").glob("ensemble(*.json"))
    for path in filter(Path.exists, paths):
        r = json.loads(path.read_text())
        f = pd.DataFrame(r["folds"])
        cell = {}
        for col, label in (("eer", "EER %"), ("eer_tta", "EER +mirror TTA %"), ("accuracy", "accuracy %"),
                           ("ece", "ECE %")):
            m, h = interval(f[col].astype(float))
            cell[label] = f"{100 * m:.2f} ± {100 * h:.2f}" if np.isfinite(m) else "—"
        calibrated = "yes" if r["config"] and r["config"].get("calibrate") else "no"
        rows.append(dict(run=r["name"], change=json.dumps(r["change"]) if r["change"] else "(BASE)",
                         **{"temperature-scaled": calibrated}, **cell,
                         **{"epochs (mean)": f"{f['epochs'].mean():.0f}",
                            "train s/fold": f"{f['seconds'].mean():.0f}"}))
    md = ("# 5-fold CV ablations\n\nCommand: `python scripts/cv_ablations.py NAME...` then "
          "`python scripts/cv_ablations.py --table`.\n\n"
          f"BASE: `{json.dumps(BASE)}`; each run's full config is in `results/cv/NAME.json`. Mean ± 95% "
          "t-interval over the 5 folds; EER per fold on its held-out test fold; accuracy at threshold 0.5. "
          "Temperature scaling (fit on each fold's validation part) changes ECE and accuracy, not EER. "
          "Seconds are wall-clock on a 2-core machine shared with other jobs: compare them loosely.\n\n"
          + pd.DataFrame(rows).to_markdown(index=False) + "\n")
    atomic_write(OUT / "cv_ablations.md", lambda tmp: Path(tmp).write_text(md))
    print(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"runs among: {', '.join(ABLATIONS)}")
    ap.add_argument("--ensemble", nargs="+", metavar="RUN", help="cached runs to average")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unknown = set(args.names) - set(ABLATIONS)
    if unknown:
        ap.error(f"unknown run(s) {sorted(unknown)}; choose among {list(ABLATIONS)}")
    if args.names:
        images, targets, _ = data.load_dataset()
        for name in args.names:
            run(name, images, targets)
    if args.ensemble:
        ensemble(args.ensemble, data.load_dataset()[1])
    if args.table:
        table()
