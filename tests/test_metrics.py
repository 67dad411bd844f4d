import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from eye_clf import metrics


def rates(targets, scores, t):
    """FPR (closed called open) and FNR (open called closed) when score >= t means open."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    return np.mean(scores[targets == 0] >= t), np.mean(scores[targets == 1] < t)


def brute_force_eer(targets, scores):
    """Sweep every threshold, counting the errors exactly (fractions); the EER is where FPR and FNR cross (linear
    between neighbouring thresholds). Returns (EER, the threshold at or just past the crossing)."""
    targets, scores = np.asarray(targets), np.asarray(scores)
    ts = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    neg, pos = scores[targets == 0], scores[targets == 1]
    fpr = [Fraction(int(np.sum(neg >= t)), len(neg)) for t in ts]
    fnr = [Fraction(int(np.sum(pos < t)), len(pos)) for t in ts]
    k = next(i for i in range(len(ts)) if fnr[i] <= fpr[i])
    if fnr[k] == fpr[k]:
        return float(fpr[k]), ts[k]
    d0, d1 = fnr[k - 1] - fpr[k - 1], fnr[k] - fpr[k]
    return float(fpr[k - 1] + d0 / (d0 - d1) * (fpr[k] - fpr[k - 1])), ts[k]


def sklearn_roc_eer(targets, scores):
    """The EER as the root of FNR - FPR along sklearn's piecewise-linear ROC curve."""
    fpr, tpr, _ = roc_curve(targets, scores)
    s = np.arange(len(fpr))
    gap = lambda u: np.interp(u, s, 1 - tpr) - np.interp(u, s, fpr)  # noqa: E731
    return float(np.interp(brentq(gap, 0, len(fpr) - 1, xtol=1e-12), s, fpr))


def test_eer_perfect_separation_is_zero():
    targets, scores = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    rate, thr = metrics.eer(targets, scores)
    assert rate == 0
    assert 0.2 < thr <= 0.8 and rates(targets, scores, thr) == (0, 0)
    assert metrics.accuracy(targets, scores, thr) == 1


def test_eer_fully_inverted_is_one():
    assert metrics.eer([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])[0] == 1


def test_eer_exact_crossing_at_a_threshold():
    # by score: open, open, closed, open, open | closed, open, closed, closed, closed
    targets = [1, 1, 0, 1, 1, 0, 1, 0, 0, 0]
    scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    # score >= 0.75: 1 of 5 closed eyes called open (FPR 0.2), 1 of 5 open eyes called closed (FNR 0.2)
    assert metrics.eer(targets, scores) == (pytest.approx(0.2), 0.75)


def test_eer_threshold_is_the_crossing_even_on_straight_roc_segments():
    # open 0.9, closed 0.8, closed 0.7, open 0.6: at 0.8 FPR = FNR = 1/2; at 0.7 FPR is 1 (the ROC point of 0.8
    # lies on a straight segment, which sklearn's roc_curve drops by default)
    rate, thr = metrics.eer([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6])
    assert rate == 0.5 and thr == 0.8


def test_eer_interpolates_between_thresholds():
    # open 0.9 | closed 0.8 | closed 0.7 | open 0.6 | closed 0.5: FNR stays 1/2 while FPR goes 1/3 -> 2/3
    rate, thr = metrics.eer([1, 0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert rate == pytest.approx(0.5) and thr == 0.7
    # ties: FNR 1/2 -> 0 while FPR 0 -> 1/2 in one step; the lines cross half-way
    assert metrics.eer([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])[0] == pytest.approx(0.25)
    assert metrics.eer([1, 0, 1, 0], [0.3] * 4) == (pytest.approx(0.5), 0.3)


@pytest.mark.parametrize("seed", range(20))
def test_eer_matches_brute_force_and_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    targets = rng.integers(0, 2, n)
    targets[:2] = [0, 1]
    scores = rng.normal(targets * rng.uniform(0, 2), 1)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    rate, thr = metrics.eer(targets, scores)
    expected = brute_force_eer(targets, scores)
    assert (rate, thr) == (pytest.approx(expected[0], abs=1e-12), expected[1])
    assert rate == pytest.approx(sklearn_roc_eer(targets, scores), abs=1e-9)
    ts = np.unique(scores)
    fpr, fnr = np.array([rates(targets, scores, t) for t in ts]).T
    assert np.max(np.minimum(fpr, fnr)) <= rate + 1e-12 <= np.min(np.maximum(fpr, fnr)) + 2e-12
    if seed % 2 == 0:  # distinct scores: the threshold is the sample next to the crossing
        fpr_t, fnr_t = rates(targets, scores, thr)
        assert abs(fpr_t - rate) <= 1 / np.sum(targets == 0) + 1e-12
        assert abs(fnr_t - rate) <= 1 / np.sum(targets == 1) + 1e-12


def test_eer_threshold_at_an_exact_crossing_of_the_rates():
    # at 0.7 one of three closed eyes is called open and one of three open eyes closed: FPR = FNR = 1/3 exactly,
    # which 1 - TPR (0.33333333333333337) and FPR (0.3333333333333333) miss as floats
    assert metrics.eer([1, 1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) == (pytest.approx(1 / 3), 0.7)


@pytest.mark.parametrize("seed", range(20))
def test_eer_threshold_matches_exact_counting_on_balanced_tied_data(seed):
    rng = np.random.default_rng(seed)
    n = 2 * int(rng.integers(3, 60))  # as many open as closed eyes and few distinct scores: exact crossings
    targets = rng.permutation(np.repeat([0, 1], n // 2))
    scores = np.round(rng.normal(targets, 1), 0)
    rate, thr = metrics.eer(targets, scores)
    expected = brute_force_eer(targets, scores)
    assert (rate, thr) == (pytest.approx(expected[0], abs=1e-12), expected[1])


def test_accuracy():
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5]) == 0.5
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5], threshold=0.35) == 0.75
    assert metrics.accuracy(np.array([1, 1]), np.array([0.5, 0.49])) == 0.5
    assert metrics.accuracy([1, 0, 1, 0], np.array([[0.9], [0.1], [0.8], [0.2]])) == 1.0  # a column is flattened
    with pytest.raises(ValueError, match="2 targets and 1 scores"):
        metrics.accuracy([1, 0], [0.9])


def test_auc_hand_case_and_pair_counting():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(targets, 1), 1)
    pos, neg = scores[targets == 1], scores[targets == 0]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert metrics.auc(targets, scores) == pytest.approx(pairs)


def test_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    calibrated = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert metrics.ece(calibrated, p) < 0.02
    truth = rng.uniform(0, 1, p.size) < 0.7  # 70% open, but the model says 99% / 1%
    over = np.where(rng.uniform(0, 1, p.size) < 0.7, 0.99, 0.01)
    assert metrics.ece(truth.astype(int), over) > 0.25
    with pytest.raises(ValueError, match=r"calibration needs P\(open\) in 0..1, got -0.4..1.7"):
        metrics.ece([1, 0], [1.7, -0.4])  # logits by mistake
    assert metrics.ece([1, 1, 1, 1, 0], [0.8] * 5) == pytest.approx(0)
    assert metrics.ece([1, 1], [0.8, 1.0]) == pytest.approx(0.1)
    assert metrics.ece([0, 1], [0.0, 1.0]) == 0
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        metrics.ece([1, 0, 1], [0.9, np.nan, 0.2])


def test_eer_threshold_is_a_score_whatever_the_scores_scale():
    assert metrics.eer([0, 0, 1, 1], [1, 2, 3, 4]) == (0.0, 3.0)  # logits or margins, not only P(open)


def test_summary():
    targets, scores = [1, 1, 0, 1, 1, 0, 1, 0, 0, 0], [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    s = metrics.summary(targets, scores)
    assert set(s) == {"eer", "eer_threshold", "accuracy", "accuracy_at_eer", "auc", "ece"}
    assert s["eer"] == pytest.approx(0.2) and s["eer_threshold"] == 0.75
    assert s["accuracy"] == 0.5 and s["accuracy_at_eer"] == 0.8
    assert all(isinstance(v, float) for v in s.values())


def test_eer_needs_both_classes():
    with pytest.raises(ValueError, match="both open"):
        metrics.eer([1, 1, 1], [0.2, 0.5, 0.9])


def test_calibration_bins():
    mean_score, open_rate, count = metrics.calibration_bins([1, 0, 1, 1], [0.05, 0.1, 0.5, 0.97], bins=4)
    assert count.tolist() == [2, 0, 1, 1]
    assert np.allclose(mean_score, [0.075, np.nan, 0.5, 0.97], equal_nan=True)
    assert np.allclose(open_rate, [0.5, np.nan, 1, 1], equal_nan=True)
    # ECE is the count-weighted gap of these bins: (2 * 0.425 + 1 * 0.5 + 1 * 0.03) / 4
    assert metrics.ece([1, 0, 1, 1], [0.05, 0.1, 0.5, 0.97], bins=4) == pytest.approx(0.345)


def test_reliability_diagram_plots_the_ece_bins():
    from eye_clf import plots
    rng = np.random.default_rng(1)
    targets, scores = rng.integers(0, 2, 300), rng.uniform(0, 1, 300)
    fig = plots.plot_reliability(targets, scores, bins=10)
    mean_score, open_rate, count = metrics.calibration_bins(targets, scores, bins=10)
    x, y = fig.axes[0].lines[1].get_data()
    assert np.allclose(x, mean_score) and np.allclose(y, open_rate)
    assert [b.get_height() for b in fig.axes[1].patches] == count.tolist()


def test_history_plot_labels_rates_in_percent():
    from eye_clf import plots
    history = [dict(epoch=e, train_loss=1 / e, val_loss=1 / e, train_accuracy=0.8, val_accuracy=0.9,
                    train_eer=0.4 / e, val_eer=0.3 / e) for e in range(1, 21)]
    fig = plots.plot_history(history)
    fig.canvas.draw()
    _, acc, eer = fig.axes
    eer_labels = [t.get_text() for t in eer.get_yticklabels() if t.get_text()]
    assert {"2%", "5%", "10%", "20%"} <= set(eer_labels) and all(s.endswith("%") for s in eer_labels)
    assert all(t.get_text().endswith("%") for t in acc.get_yticklabels() if t.get_text())
    assert not [t for t in eer.get_yticklabels(minor=True) if t.get_text()]  # no "4x10^-1" minor labels


def test_history_plot_draws_an_eer_of_zero_off_the_bottom_not_as_a_gap():
    from eye_clf import plots
    history = [dict(epoch=e, train_loss=1 / e, val_loss=1 / e, train_accuracy=0.8, val_accuracy=0.9,
                    train_eer=0.1 if e < 3 else 0.0, val_eer=0.1) for e in range(1, 5)]
    eer = plots.plot_history(history).axes[2]
    bottom = eer.transData.transform((1, eer.get_ylim()[0]))[1]
    ys = eer.transData.transform(np.c_[[3, 4], [0.0, 0.0]])[:, 1]  # where the two perfect epochs are drawn
    assert np.isfinite(ys).all() and (ys < bottom).all()


def test_history_plot_marks_the_epoch_kept():
    from eye_clf import plots
    history = [dict(epoch=e, train_loss=1 / e, val_loss=abs(e - 7) + 1, train_accuracy=0.8, val_accuracy=0.9,
                    train_eer=0.1, val_eer=0.1) for e in range(1, 11)]
    for keep_last, epoch, label in ((False, 7, "best val loss (epoch 7)"), (True, 10, "kept: last epoch (10)")):
        mark = plots.plot_history(history, keep_last=keep_last).axes[0].lines[2]
        assert mark.get_xdata()[0] == epoch and mark.get_label() == label


def test_history_plot_says_when_the_loss_is_against_smoothed_labels():
    from eye_clf import plots
    history = [dict(epoch=e, train_loss=1 / e, val_loss=1 / e, train_accuracy=0.8, val_accuracy=0.9, train_eer=0.1,
                    val_eer=0.1) for e in range(1, 4)]
    assert plots.plot_history(history).axes[0].get_title() == "BCE loss"
    assert plots.plot_history(history, smoothing=0.1).axes[0].get_title() == "BCE loss (labels smoothed by 0.1)"


def test_labeller_errors_recovers_independent_flip_rates():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200_000)
    flips = (0.02, 0.05, 0.15)
    labels = [np.where(rng.random(truth.size) < e, 1 - truth, truth) for e in flips]
    assert metrics.labeller_errors(*labels) == pytest.approx(flips, abs=0.003)
    assert metrics.labeller_errors(truth, truth, labels[2]) == pytest.approx((0, 0, np.mean(labels[2] != truth)))
    with pytest.raises(ValueError, match="different shapes"):
        metrics.labeller_errors(truth, truth, truth[:-1])
    with pytest.raises(ValueError, match="0 or 1 only"):  # a blank annotation is no disagreement
        metrics.labeller_errors(truth, truth, np.where(np.arange(truth.size) < 9, np.nan, truth))
    with pytest.raises(ValueError, match="half the images"):
        metrics.labeller_errors(truth, 1 - truth, truth)
    y, z = truth.copy(), truth.copy()
    y[:5], z[5:10] = 1 - y[:5], 1 - z[5:10]  # y and z err on different images: x would be below zero
    with pytest.raises(ValueError, match="negative error rate"):
        metrics.labeller_errors(truth, y, z)


def test_calibrated_eces_are_the_sampling_spread_of_a_calibrated_model():
    # one bin of P(open) = 0.5: the ECE is |open rate - 0.5|, a half-normal of scale sqrt(0.25 / n)
    scale = 0.5 / np.sqrt(800)
    draws = metrics.calibrated_eces(np.full(800, 0.5), bins=1, draws=4000)
    assert draws.shape == (4000,) and draws.mean() == pytest.approx(scale * np.sqrt(2 / np.pi), rel=0.05)
    assert np.percentile(draws, 95) == pytest.approx(scale * 1.96, rel=0.05)
    assert not metrics.calibrated_eces(np.r_[np.zeros(400), np.ones(400)]).any()  # certain and right: nothing to miss


def test_learning_curve_plots_each_point_with_its_interval_and_the_goal():
    from eye_clf import plots
    curves = {"a": [(720, 0.04, 0.005), (2880, 0.02, 0.004)], "b": [(2880, 0.025, 0.01)]}
    fig = plots.plot_learning_curve(curves, goal=0.015)
    ax = fig.axes[0]
    a, b = (c.lines[0] for c in ax.containers)
    assert np.allclose(a.get_ydata(), [0.04, 0.02]) and np.allclose(b.get_ydata(), [0.025])
    assert np.allclose(a.get_xdata(), np.array([720, 2880]) / 1.02 ** 0.5)  # nudged apart, the same ratio each
    low, high = ax.containers[0].lines[1][:2]
    assert np.allclose(low.get_ydata(), [0.035, 0.016]) and np.allclose(high.get_ydata(), [0.045, 0.024])
    assert any(np.allclose(line.get_ydata(), 0.015) for line in ax.lines if line not in (a, b))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["720", "2,880"]


def test_importing_the_plots_keeps_the_callers_matplotlib_backend():
    """A notebook's inline backend (here: svg) survives ``import eye_clf.plots`` (and eye_clf.experiment)."""
    code = "import matplotlib; matplotlib.use('svg'); import eye_clf.experiment; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
