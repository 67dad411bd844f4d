"""Near-copies among the labelled images: pairs that would put (almost) the same patch on both sides of a CV split.

    python scripts/near_duplicates.py > results/near_duplicates.txt

Two patches are compared by the correlation of their pixels (so a copy with other brightness or contrast scores 1),
over their central 22x22 pixels with one of them shifted by up to a pixel each way and mirrored or not; a pair's
score is the best of those 18 comparisons. CEW gives no face identities, so the two eyes of one face are found only
where they look alike mirrored. For each level, how many pairs the shipped recipe's 5-fold CV splits across folds
(so that one image's model trained on its partner), and that CV's out-of-fold errors (each fold's validation
threshold) among the images in such pairs and among the others.
"""
import argparse
import itertools

import numpy as np

from eye_clf import data, experiment
from eye_clf.__main__ import int_at_least
from eye_clf.cv import out_of_fold
from eye_clf.files import provenance
from eye_clf.train import TrainConfig

SHIFT = 1  # pixels each way
LEVELS = (0.98, 0.95, 0.93, 0.90)


def centred(images, dy, dx):
    """The (24 - 2 SHIFT)^2 window shifted by (dy, dx) of each image, as rows of zero mean and unit norm."""
    side = images.shape[1] - 2 * SHIFT
    w = images[:, SHIFT + dy:SHIFT + dy + side, SHIFT + dx:SHIFT + dx + side].reshape(len(images), -1)
    w = w - w.mean(1, keepdims=True)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def best_correlation(images):
    """n x n: for each pair, the highest correlation over the shifts and the mirror (the diagonal is -1)."""
    images = images.astype(np.float64)
    fixed = centred(images, 0, 0)
    best = np.full((len(images),) * 2, -1.0)
    for flip, dy, dx in itertools.product((False, True), range(-SHIFT, SHIFT + 1), range(-SHIFT, SHIFT + 1)):
        moved = centred(images[:, :, ::-1] if flip else images, dy, dx)
        np.maximum(best, fixed @ moved.T, out=best)
    best = np.maximum(best, best.T)  # a shift of one is the opposite shift of the other
    np.fill_diagonal(best, -1.0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help=f"data folder (default: ${data.DATA_ENV} or ../shared/data)")
    ap.add_argument("--top", type=int_at_least(0), default=10, help="pairs to list (default: 10)")
    args = ap.parse_args()
    try:
        images, targets, names = data.load_dataset(args.data)
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    found = experiment.cv_of(TrainConfig(), experiment.CV_RESULTS, images, targets)
    if found is None:
        ap.error(f"{experiment.CV_RESULTS} has no complete CV of the shipped recipe on this data")
    run, rows = found
    fold = np.empty(len(targets), int)
    for r in rows:
        fold[r["test_idx"]] = r["fold"]
    p, threshold = out_of_fold(rows, len(targets))
    wrong = (p >= threshold) != targets
    best = best_correlation(images)
    i, j = np.triu_indices(len(images), 1)
    score = best[i, j]
    print(f"# python scripts/near_duplicates.py; {provenance()}")
    print(f"{len(images)} images, {score.size} pairs; highest correlation over shifts of up to {SHIFT} px and the "
          f"mirror: {score.max():.4f}; out-of-fold errors of {run}: {wrong.sum()}")
    for level in LEVELS:
        above = score > level
        paired = np.zeros(len(images), bool)
        paired[i[above]] = paired[j[above]] = True
        print(f"pairs above {level:.2f}: {above.sum()} ({paired.sum()} images; labels differ in "
              f"{(targets[i[above]] != targets[j[above]]).sum()}; split across CV folds: "
              f"{(fold[i[above]] != fold[j[above]]).sum()}); out-of-fold errors: {wrong[paired].sum()} of "
              f"{paired.sum()} images in them, {wrong[~paired].sum()} of the other {(~paired).sum()}")
    print(f"the {args.top} highest pairs (correlation, names, labels):")
    for k in np.argsort(-score, kind="stable")[:args.top]:
        print(f"{score[k]:.4f} {names[i[k]]} {names[j[k]]} {targets[i[k]]} {targets[j[k]]}")


if __name__ == "__main__":
    main()
