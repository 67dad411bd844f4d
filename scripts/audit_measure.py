"""Measure the label audit and the studio on ../shared/data; writes results/audit.md.

    python scripts/audit_measure.py [--epochs 25] [--timing results/studio_timing.json]

1. Flip a seeded random 5% of the reference labels, audit them (5-fold out-of-fold P(open) + cleanlab) and score
   the review list at finding the flipped ones: precision, recall, precision@k (k = number flipped).
2. Audit the reference labels as they are: how many images where other_annotations.csv disagrees with the
   reference are in the review list.
3. Estimate the time to label 4000 images with model assistance from the out-of-fold predictions of 2 (what a
   model that never saw an image says about it), the browser test's measured seconds per grid page and per label
   ($EYE_CLF_STUDIO_TIMING) and stated human-pace assumptions.

Out-of-fold probabilities are cached in runs/audit/ (not committed), keyed by the recipe (every TrainConfig field),
the folds and the data's fingerprint, with the provenance of the run that made them: delete them to retrain.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eye_clf import data
from eye_clf.__main__ import int_at_least, output_file
from eye_clf.audit import label_quality, review_list
from eye_clf.cv import cross_val_predict, data_id
from eye_clf.files import atomic_write, provenance
from eye_clf.labels_store import LabelStore
from eye_clf.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
FLIP = 0.05
PAGE = 48                 # images per grid page (studio.html)
# Human pace: assumptions, not measurements (no person labeled here).
SCAN_S = 0.25             # looking at one image on a grid page of confident pre-labels
FIX_S = 2.0               # moving to a wrong pre-label on the page and flipping it
DECIDE_S = 1.5            # judging one uncertain image shown alone, then one key


def oof(images, targets, cfg, folds, seed, cache):
    """Out-of-fold P(open), cached as CSV; returns (p, run record: seconds spent training and the provenance of the
    run that trained, from_cache)."""
    if cache.exists():
        return pd.read_csv(cache)["p_open"].to_numpy(), json.loads(cache.with_suffix(".json").read_text()), True
    t0 = time.perf_counter()
    p, _ = cross_val_predict(images, targets, cfg, folds, seed)
    run = dict(seconds=time.perf_counter() - t0, provenance=provenance())
    # the record first: the CSV is written last, so that a cache that exists is complete
    atomic_write(cache.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(run)))
    atomic_write(cache, lambda tmp: pd.DataFrame({"p_open": p}).to_csv(tmp, index=False))
    return p, run, False


def flipped_audit(images, targets, names, cfg, args):
    rng = np.random.default_rng(args.seed)
    flip = rng.choice(len(targets), round(FLIP * len(targets)), replace=False)
    noisy = targets.copy()
    noisy[flip] ^= 1
    p, run, cached = oof(images, noisy, cfg, args.folds, args.seed, args.work / f"oof_flipped_{args.tag}.csv")
    review = review_list(names, noisy, p)
    found = set(review["img_name"])
    flipped = {names[i] for i in flip}
    k = len(flip)
    top_k = {names[i] for i in np.argsort(label_quality(noisy, p), kind="stable")[:k]}
    return dict(flipped=k, listed=len(found), hits=len(found & flipped),
                precision=len(found & flipped) / max(len(found), 1), recall=len(found & flipped) / k,
                precision_at_k=len(top_k & flipped) / k, others=found - flipped, run=run, cached=cached)


def disagreements(names, targets, root):
    """Images where annotator a or b (when they labeled it) disagrees with the reference, and where both do."""
    other = data.read_annotations(names, root)  # N x 2, NaN where that person skipped the image
    off, names = ~np.isnan(other) & (other != targets[:, None]), np.asarray(names)
    return set(names[off.any(1)]), set(names[off.all(1)])


def labeling_estimate(targets, p, timing, save_s, slow=1.0):
    """Seconds to label len(p) images: confident ones (P >= 0.9 or <= 0.1) on grid pages, the rest one by one;
    ``slow`` multiplies the assumed human times."""
    confident = np.abs(p - 0.5) >= 0.4
    wrong = confident & ((p >= 0.5) != (targets == 1))
    pages = int(np.ceil(confident.sum() / PAGE))
    page_s = float(np.mean(timing["grid_page_seconds"])) + save_s
    key_s = float(np.mean(timing["single_label_seconds"])) + save_s
    grid_s = confident.sum() * SCAN_S * slow + wrong.sum() * FIX_S * slow + pages * page_s
    single_s = (~confident).sum() * (DECIDE_S * slow + key_s)
    return dict(confident=int(confident.sum()), wrong=int(wrong.sum()), pages=pages,
                uncertain=int((~confident).sum()), save_s=save_s, grid_s=grid_s, single_s=single_s,
                total_s=grid_s + single_s, unassisted_s=len(p) * (DECIDE_S * slow + key_s))


def save_seconds(n):
    """Median seconds of one studio save of an n-row labels file."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "img").mkdir()
        for i in range(n):
            (Path(tmp) / "img" / f"{i:06d}.png").write_bytes(b"")  # names only: the store never opens them
        store = LabelStore(Path(tmp) / "labels.xlsx", Path(tmp) / "img")
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            store.save()
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cache_tag(cfg, folds, images, targets):
    """The key of a cached out-of-fold run: the whole recipe, the folds and the data's fingerprint."""
    recipe = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return f"e{cfg.epochs}_f{folds}_s{cfg.seed}_{recipe}_{data_id(images, targets)}"


def recipe_text(cfg):
    """The fields of ``cfg`` that differ from TrainConfig's defaults, as field=value."""
    default = asdict(TrainConfig())
    return "eyenet defaults except " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items() if v != default[k])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int_at_least(1), default=25)
    parser.add_argument("--folds", type=int_at_least(2), default=5)
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seed of the flipped labels, the folds and the training (default 0: results/audit.md)")
    parser.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    parser.add_argument("--threads", type=int_at_least(1), default=1,
                        help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "audit")
    parser.add_argument("--timing", type=Path, default=ROOT / "results" / "studio_timing.json",
                        help="timings from EYE_CLF_STUDIO_TIMING=... pytest tests/test_studio_browser.py")
    parser.add_argument("--out", type=lambda text: Path(output_file(text)), default=ROOT / "results" / "audit.md")
    args = parser.parse_args()
    if not args.timing.is_file():
        sys.exit(f"{args.timing} missing: run EYE_CLF_STUDIO_TIMING={args.timing} "
                 ".venv/bin/python -m pytest -q tests/test_studio_browser.py first")
    timing = json.loads(args.timing.read_text())
    torch.set_num_threads(args.threads)
    # the recipe this measurement was made with (before label smoothing, mirror TTA, temperature scaling and refit)
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, label_smoothing=0.0, tta=False, calibrate=False, refit=False)
    try:
        root = data.data_dir(args.data)
        if not (root / data.ANNOTATIONS_NAME).is_file():  # read after the training: refused before it
            raise FileNotFoundError(f"{root / data.ANNOTATIONS_NAME} missing: the other annotators' labels, "
                                    "which the report compares the audit's list with")
        images, targets, names = data.load_dataset(root)
        data.kfold(targets, args.folds, args.seed)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    args.tag = cache_tag(cfg, args.folds, images, targets)

    flipped = flipped_audit(images, targets, names, cfg, args)
    disagree, both = disagreements(names, targets, root)
    flipped["others_disagreed"] = len(flipped["others"] & disagree)
    p, clean_run, clean_cached = oof(images, targets, cfg, args.folds, args.seed,
                                     args.work / f"oof_reference_{args.tag}.csv")
    listed = set(review_list(names, targets, p)["img_name"])
    top = {names[i] for i in np.argsort(label_quality(targets, p), kind="stable")[:len(disagree)]}
    save_s = save_seconds(len(names))
    est = labeling_estimate(targets, p, timing, save_s)
    slow = labeling_estimate(targets, p, timing, save_s, slow=2.0)

    f = flipped
    prov = provenance()
    made = clean_run["provenance"]["command"].split(" ", 1)  # the command of the run that trained (cached or now)
    command = "python scripts/audit_measure.py" + (f" {made[1]}" if len(made) > 1 else "")
    lines = [
        "# Label audit and labeling studio: measured",
        "",
        f"Provenance: commit {prov['git_commit']} (uncommitted changes: {prov['git_dirty']}), {prov['versions']}, "
        f"{prov['machine']}.",
        "",
        f"Command: `{command}` on the {len(names)} images of {os.path.relpath(root, ROOT)}. "
        f"Each audit trains {args.folds} models of the recipe {recipe_text(cfg)} (the epoch of lowest loss on the "
        "fold's validation split kept) and scores every image with the model that did not train "
        "on it; cleanlab's `find_label_issues` on those out-of-fold P(open) makes the review list (ranked by "
        "cleanlab's self-confidence score, the out-of-fold probability of the given label). "
        f"Training time: {f['run']['seconds']:.0f} s + {clean_run['seconds']:.0f} s wall on CPU "
        f"({clean_run['provenance']['machine']['torch_threads']} torch thread(s) on "
        f"{clean_run['provenance']['machine']['cpu_count']} cores)"
        + (f". These numbers were re-rendered from the out-of-fold probabilities cached in "
           f"{os.path.relpath(args.work, ROOT)} by the runs at commit {f['run']['provenance']['git_commit']} "
           f"(uncommitted changes: {f['run']['provenance']['git_dirty']}) and "
           f"{clean_run['provenance']['git_commit']} (uncommitted changes: {clean_run['provenance']['git_dirty']})"
           if f["cached"] or clean_cached else "") + ".",
        "",
        f"## Finding {f['flipped']} flipped labels ({FLIP:.0%}, seed {args.seed})",
        "",
        "| review list | flipped found | precision | recall | precision@k (k = flipped, by self-confidence) |",
        "|---|---|---|---|---|",
        f"| {f['listed']} images | {f['hits']} | {f['precision']:.1%} | {f['recall']:.1%} | "
        f"{f['precision_at_k']:.1%} |",
        "",
        f"Of the {len(f['others'])} listed images that were not flipped, {f['others_disagreed']} are images where "
        "annotator a or b disagrees with the reference label: some of the \"false positives\" are likely errors "
        "of the reference itself.",
        "",
        "## The reference labels as given",
        "",
        f"- The audit lists {len(listed)} of {len(names)} labels as likely wrong.",
        f"- `other_annotations.csv` disagrees with the reference on {len(disagree)} images (annotator a or b); "
        f"{len(listed & disagree)} of them are in the review list ({len(listed & disagree) / max(len(listed), 1):.0%}"
        f" of the list, against {len(disagree) / len(names):.1%} of all images).",
        f"- On {len(both)} images both annotators disagree with the reference; {len(listed & both)} of them are in "
        "the review list.",
        f"- The {len(disagree)} lowest self-confidence images hold {len(top & disagree)} of the {len(disagree)} "
        "disagreements.",
        "",
        "## Labeling 4000 images with the studio: estimate",
        "",
        "What a model that never saw an image says about it: the out-of-fold P(open) of the reference audit above "
        "(each model trained on the other 80% of the images, so this assumes a model trained on similar images "
        "that are already labeled). "
        f"{est['confident']} images are confident (P >= 0.9 or <= 0.1) and go to grid pages of {PAGE} "
        f"({est['pages']} pages), {est['wrong']} of them with a wrong pre-label to flip; {est['uncertain']} uncertain "
        "images are labeled one at a time, most uncertain first.",
        "",
        "Measured (software, no human): headless Chromium driven by Playwright in "
        "`tests/test_studio_browser.py` (`EYE_CLF_STUDIO_TIMING=results/studio_timing.json`): key presses to the "
        f"page saved and the next one shown {np.mean(timing['grid_page_seconds']):.2f} s per grid page, "
        f"{np.mean(timing['single_label_seconds']):.2f} s per single label (120-row labels file); one save of a "
        f"{len(names)}-row xlsx here adds {est['save_s']:.2f} s to each. The page "
        "does not wait for saves, so these are upper bounds of the wait.",
        "",
        f"Assumed (human pace): {SCAN_S} s to check one image on a grid page ({SCAN_S * PAGE:.0f} s per page), "
        f"{FIX_S} s to move to and flip a wrong pre-label, {DECIDE_S} s to judge an uncertain image alone.",
        "",
        "| part | images | time |",
        "|---|---|---|",
        f"| grid pages | {est['confident']} | {est['grid_s'] / 60:.0f} min |",
        f"| one at a time | {est['uncertain']} | {est['single_s'] / 60:.0f} min |",
        f"| **model-assisted total** | {len(names)} | **{est['total_s'] / 60:.0f} min** |",
        f"| without a model, one at a time at the same pace | {len(names)} | {est['unassisted_s'] / 60:.0f} min |",
        "",
        f"If every human time above is doubled: {slow['total_s'] / 60:.0f} min with the model, "
        f"{slow['unassisted_s'] / 60:.0f} min without.",
        "",
    ]
    atomic_write(args.out, lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
