"""Metrics for P(open) scores against 0/1 targets: EER (with its threshold), accuracy, ROC AUC, ECE; and the
error rates of three labellings of the same images."""
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def eer(targets, scores):
    """Equal error rate and the score threshold where it is reached.

    On the ROC curve the false-positive rate (closed eyes called open) and the false-negative rate (open eyes
    called closed) cross; the EER is their common value, linearly interpolated between the two ROC points that
    bracket the crossing. Returns ``(eer, threshold)``.
    """
    if len(np.unique(targets)) != 2:
        raise ValueError("EER needs both open (1) and closed (0) targets")
    fpr, tpr, thr = roc_curve(targets, scores, drop_intermediate=False)  # thr[i] next to the crossing
    fnr = 1 - tpr
    pos = int(np.sum(np.asarray(targets) == 1))
    neg = len(targets) - pos
    # fnr <= fpr compared on the counts (fn / pos <= fp / neg), which float rates can get wrong at an exact tie
    fn_neg, fp_pos = (pos - np.rint(tpr * pos)) * neg, np.rint(fpr * neg) * pos
    i = np.nonzero(fn_neg <= fp_pos)[0][0]  # first point at or past the crossing (fpr rises, fnr falls)
    if fn_neg[i] == fp_pos[i]:  # never the first point (fpr 0, fnr 1)
        return float(fpr[i]), float(thr[i])
    # segment (i-1, i): fnr - fpr goes from > 0 to < 0
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = d0 / (d0 - d1)
    rate = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return float(rate), float(thr[i])


def accuracy(targets, scores, threshold=0.5):
    targets, scores = np.ravel(targets), np.ravel(scores)
    if targets.shape != scores.shape:  # (broadcasting would compare every score with every target)
        raise ValueError(f"{targets.size} targets and {scores.size} scores")
    return float(np.mean((scores >= threshold) == targets))


def auc(targets, scores):
    return float(roc_auc_score(targets, scores))


def calibration_bins(targets, scores, bins=15):
    """Equal-width P(open) bins: per bin the mean score, the observed open rate (NaN for an empty bin) and the
    number of images. ``ece`` and the reliability diagram (``plots.plot_reliability``) share these bins."""
    targets, scores = np.asarray(targets, dtype=float), np.asarray(scores, dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError(f"calibration needs finite scores: {int((~np.isfinite(scores)).sum())} NaN or infinite")
    if scores.size and (scores.min() < 0 or scores.max() > 1):  # e.g. logits passed by mistake
        raise ValueError(f"calibration needs P(open) in 0..1, got {scores.min():.3g}..{scores.max():.3g}")
    which = np.clip(np.digitize(scores, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.bincount(which, scores, bins) / count, np.bincount(which, targets, bins) / count, count)


def ece(targets, scores, bins=15):
    """Expected calibration error of P(open): the bin-weighted gap between mean score and open rate."""
    mean_score, open_rate, count = calibration_bins(targets, scores, bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(mean_score[used] - open_rate[used])))


def calibrated_eces(scores, bins=15, draws=1000, seed=0):
    """The ECEs a perfectly calibrated model with these scores shows on this many images, one per draw: each draw
    takes the targets from the scores themselves (open with probability P(open)). Their mean is the floor that
    sampling alone puts under the ECE (biased upwards on small sets); their spread, how far above it chance goes."""
    scores, rng = np.asarray(scores, dtype=float), np.random.default_rng(seed)
    return np.array([ece(rng.random(scores.size) < scores, scores, bins) for _ in range(draws)])


def summary(targets, scores):
    """EER, its threshold, accuracy at 0.5 and at the EER threshold, AUC and ECE in one dict."""
    rate, thr = eer(targets, scores)
    return dict(eer=rate, eer_threshold=thr, accuracy=accuracy(targets, scores),
                accuracy_at_eer=accuracy(targets, scores, thr), auc=auc(targets, scores),
                ece=ece(targets, scores))


def labeller_errors(x, y, z):
    """Error rates of three 0/1 labellings of the same images, if each flips the truth independently of the others.

    Two labellings with error rates e, f disagree with probability d = e + f - 2ef, i.e. 1 - 2d = (1 - 2e)(1 - 2f);
    the three pairwise disagreements then give each rate. Errors all three share (hard images) stay invisible.
    """
    x, y, z = (np.asarray(v) for v in (x, y, z))
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"labellings of different shapes: {x.shape}, {y.shape}, {z.shape}")
    if not all(np.isin(v, (0, 1)).all() for v in (x, y, z)):  # a blank (NaN) would count as a disagreement
        raise ValueError("labellings must hold 0 or 1 only: keep the images all three labelled")
    c = {k: 1 - 2 * np.mean(u != v) for k, (u, v) in dict(xy=(x, y), xz=(x, z), yz=(y, z)).items()}
    if min(c.values()) <= 0:
        raise ValueError("two labellings disagree on half the images or more: no independent-error estimate")
    ratios = [c[a] * c[b] / c[o] for a, b, o in (("xy", "xz", "yz"), ("xy", "yz", "xz"), ("xz", "yz", "xy"))]
    if max(ratios) > 1 + 1e-9:  # a negative error rate: the errors are not independent, or too few images show it
        raise ValueError("the three disagreement rates are inconsistent with independent errors (one labelling "
                         "would have a negative error rate): no independent-error estimate")
    return tuple(float((1 - np.sqrt(min(r, 1))) / 2) for r in ratios)
