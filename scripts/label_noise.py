"""How much of the CV error can label noise explain? Out-of-fold P(open) of a finished CV run against the two extra
human labelings in other_annotations.csv.

    python scripts/label_noise.py [RUN]     # default: the shipped recipe's CV (TrainConfig's defaults)

Prints how often each extra annotator agrees with the reference, against the CV models (each fold's validation
threshold) on the same images, and how the models' errors split between the images both annotators label and the
others; then, for the images where both extra annotators agree with each other but not with
the reference, how many the CV models get wrong, and the pooled out-of-fold EER with and without those images; then
the EER on the images that no extra annotator disputes (per fold: mean ± 95% interval); last, each labeller's own
error rate (metrics.labeller_errors: independent errors assumed) on the images both extra annotators label, from
the trio (reference, A, B) and from (CV models, A, B), and how far the models' disagreement with the reference is
from what independent errors at those rates would give.
"""
import argparse
from pathlib import Path

import numpy as np

from eye_clf import data, experiment, metrics
from eye_clf.cv import check_data, data_id, interval, out_of_fold
from eye_clf.files import provenance
from eye_clf.train import TrainConfig

RESULTS = Path(__file__).resolve().parent.parent / "results"

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("run", nargs="?", help="a run in results/cv/ (default: the shipped recipe's)")
args = ap.parse_args()
try:
    images, targets, names = data.load_dataset()
except (FileNotFoundError, ValueError) as err:
    raise SystemExit(f"error: {err}") from None
if args.run is None:
    found = experiment.cv_of(TrainConfig(), RESULTS / "cv", images, targets)
    if found is None:
        raise SystemExit("error: results/cv/ has no complete CV of the shipped recipe; run scripts/cv_ablations.py "
                         "or name a run")
    args.run = found[0]
rows = experiment.cv_rows(args.run, RESULTS / "cv")
if rows is None:
    raise SystemExit(f"error: results/cv/{args.run} has no complete CV")
try:
    check_data(rows, targets, data_id(images, targets), args.run)
except ValueError as err:
    raise SystemExit(f"error: {err}") from None
prov = provenance()
print(f"# scripts/label_noise.py {args.run} at commit {prov['git_commit']} (uncommitted changes: {prov['git_dirty']}); "
      f"{prov['versions']}")
p, threshold = out_of_fold(rows, len(targets))
a, b = data.read_annotations(names).T
both = ~np.isnan(a) & ~np.isnan(b)
against = both & (a == b) & (a != targets)
wrong = (p >= threshold) != targets
print(f"run {args.run}: {wrong.sum()} of {len(targets)} images wrong out of fold (each fold's validation threshold)")
for name, votes in (("annotator_a", a), ("annotator_b", b)):
    seen = ~np.isnan(votes)
    print(f"{name} labels {seen.sum()} images and agrees with the reference on "
          f"{100 * (votes[seen] == targets[seen]).mean():.2f}% of them; the CV models on "
          f"{100 * (wrong[seen] == 0).mean():.2f}%")
seen_a = ~np.isnan(a)
print(f"the CV models disagree with the reference on {100 * wrong[both].mean():.2f}% of the {both.sum()} images both "
      f"extra annotators label, and on {100 * wrong[~both].mean():.2f}% of the {(~both).sum()} others "
      f"({wrong[~both].sum()} of the {wrong.sum()} errors); annotator_a disagrees with it on "
      f"{100 * (a != targets)[~both & seen_a].mean():.2f}% of the {(~both & seen_a).sum()} of those it labels")
print(f"the two annotators agree with each other on {100 * (a[both] == b[both]).mean():.2f}% of the {both.sum()} "
      "images both label")
print(f"both extra annotators label {both.sum()} images; they agree with each other against the reference on "
      f"{against.sum()}; the CV models are wrong on {wrong[against].sum()} of those")
print(f"pooled out-of-fold EER: {100 * metrics.eer(targets, p)[0]:.2f}% on all images, "
      f"{100 * metrics.eer(targets[~against], p[~against])[0]:.2f}% without those {against.sum()}")
disputed = (a != targets) & ~np.isnan(a) | (b != targets) & ~np.isnan(b)
per_fold = [metrics.eer(targets[i][~disputed[i]], p[i][~disputed[i]])[0] for i in (r["test_idx"] for r in rows)]
m, h = interval(per_fold)
print(f"on the {(~disputed).sum()} images no extra annotator disputes (out of {len(targets)}): pooled out-of-fold EER "
      f"{100 * metrics.eer(targets[~disputed], p[~disputed])[0]:.2f}%, per fold {100 * m:.2f} ± {100 * h:.2f}%; "
      f"{wrong[disputed].sum()} of the {wrong.sum()} errors are on the {disputed.sum()} disputed images")
rate = {}
for first, labels in (("reference", targets), ("CV models", (p >= threshold).astype(float))):
    rate[first] = metrics.labeller_errors(labels[both], a[both], b[both])
    print(f"independent-error estimate on the {both.sum()} images both extra annotators label: "
          + ", ".join(f"{n} {100 * e:.2f}%" for n, e in zip((first, "annotator_a", "annotator_b"), rate[first]))
          + " wrong")
e, f = rate["reference"][0], rate["CV models"][0]
expected, seen = e + f - 2 * e * f, wrong[both].mean()
print(f"independent errors at those two rates would make the CV models and the reference disagree on "
      f"{100 * expected:.2f}% of those {both.sum()} images; they disagree on {100 * seen:.2f}%"
      + (": the models share some of the reference's errors (they learnt from it), so the two rates do not add up"
         if seen < expected else ""))
