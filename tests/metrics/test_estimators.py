"""Parity of the literature's estimators with their reference libraries, where one exists
(docs/metrics.md, "Estimators of the literature"); hand cases and references: references.py."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from calbench.errors import InputError
from calbench.metrics import bootstrap_metrics, compute_metrics
from calbench.metrics.binning import equal_mass_groups
from calbench.metrics.ece_variants import debiased_squared_from_sums

from .conftest import softmax, synth


def _conf_correct(labels, probs):
    return probs.max(1), (probs.argmax(1) == labels).astype(np.float64)


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 3), (2, 100)])
def test_ece_l2_equals_torchmetrics_rmsce(seed, k):
    logits, labels = synth(4000, k, seed)
    probs = softmax(logits)
    ours = compute_metrics(labels, probs=probs, keys=("ece-l2",))["ece-l2"]
    ref = multiclass_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels), k,
                                       n_bins=15, norm="l2")
    assert abs(ours - float(ref)) < 1e-6


@pytest.mark.parametrize("seed,k", [(0, 10), (3, 4)])
def test_ece_debiased_and_l2_equal_kumar_package_on_equal_width_bins(seed, k):
    """Their lower_bound_scaling_ce with equal-width (lo, hi] bins (get_equal_prob_bins: the
    edges i/15, searchsorted 'left') and mode='top-label' is calbench's ece-debiased / ece-l2."""
    utils = pytest.importorskip("calibration.utils")
    logits, labels = synth(3000, k, seed)
    probs = softmax(logits)
    ours = compute_metrics(labels, probs=probs, keys=("ece-debiased", "ece-l2"))
    for debias, key in ((True, "ece-debiased"), (False, "ece-l2")):
        ref = utils.lower_bound_scaling_ce(probs, labels, p=2, debias=debias, num_bins=15,
                                           binning_scheme=utils.get_equal_prob_bins, mode="top-label")
        assert abs(ours[key] - ref) < 1e-12


def test_kumar_package_default_is_equal_mass_top_label_conversion():
    """get_top_calibration_error(p=2, debias=True) uses 15 equal-mass bins whose edges are midpoints
    between neighbouring sorted confidences (calbench's default: equal-width): the same debiased
    formula on those bins reproduces it. Its get_calibration_error defaults to mode='marginal'
    (class-wise), which is not what ece-debiased measures."""
    utils = pytest.importorskip("calibration.utils")
    logits, labels = synth(3000, 10, 5)
    probs = softmax(logits)
    r, c = _conf_correct(labels, probs)
    order = np.argsort(r)
    ends = equal_mass_groups(len(r), 15)
    count = np.diff(ends).astype(float)
    sum_c = np.add.reduceat(c[order], ends[:-1])
    sum_r = np.add.reduceat(r[order], ends[:-1])
    ours = np.sqrt(max(debiased_squared_from_sums(count, sum_c, sum_r, len(r)), 0.0))
    assert abs(ours - utils.get_top_calibration_error(probs, labels, p=2)) < 1e-12
    assert abs(compute_metrics(labels, probs=probs, keys=("ece-debiased",))["ece-debiased"] - ours) > 1e-6


def test_sce_equals_kumar_package_marginal_l1():
    """mode='marginal', p=1, no debiasing, equal-width bins: the mean over classes of each class's
    ECE over all samples, i.e. Nixon et al.'s SCE (and calbench's cece)."""
    utils = pytest.importorskip("calibration.utils")
    logits, labels = synth(3000, 6, 7)
    probs = softmax(logits)
    ref = utils.lower_bound_scaling_ce(probs, labels, p=1, debias=False, num_bins=15,
                                       binning_scheme=utils.get_equal_prob_bins, mode="marginal")
    ours = compute_metrics(labels, probs=probs, keys=("sce", "cece"))
    assert abs(ours["sce"] - ref) < 1e-12 and ours["sce"] == ours["cece"]


def _zhang_kde_ece(probs, labels):
    """Zhang et al.'s ece_kde_binary (top-label, K > 2) rewritten on KDEpy's FFTKDE, as their code uses it."""
    from KDEpy import FFTKDE

    r, c = _conf_correct(labels, probs)
    c = c.astype(bool)
    x = np.linspace(-0.6, 1.6, 2 ** 14)
    bw = np.std(r[c]) * (2 * len(r)) ** -0.2

    def density(d):
        pts = np.concatenate([-d[d < 0.5], d, 2 - d[d >= 0.5]])
        dens = FFTKDE(bw=bw, kernel="triweight").fit(pts).evaluate(x)
        dens[(x <= 0) | (x >= 1)] = 0
        return 2 * dens

    p1, p2 = density(r[c]), density(r)
    integrand = np.zeros_like(x)
    for i in range(len(x)):
        if max(p1[i], p2[i]) > 1e-6:
            with np.errstate(divide="ignore", invalid="ignore"):
                acc = min(c.mean() * p1[i] / p2[i], 1.0)
            if not np.isnan(acc):
                integrand[i] = abs(x[i] - acc) * p2[i]
        elif i > 1:
            integrand[i] = integrand[i - 1]
    inside = (x >= 0) & (x <= 1)
    return np.trapezoid(integrand[inside], x[inside]) / np.trapezoid(p2[inside], x[inside])


def test_kde_ece_equals_authors_pipeline(seed=1, scale=1.0):
    pytest.importorskip("KDEpy")
    logits, labels = synth(1500, 10, seed, scale)
    probs = softmax(logits)
    ours = compute_metrics(labels, probs=probs, keys=("kde-ece",))["kde-ece"]
    assert abs(ours - _zhang_kde_ece(probs, labels)) < 1e-9


def test_kde_ece_all_correct_is_one_minus_mean_confidence():
    """Every prediction right, confidences far from 0 and 1: acc(x) = 1 and the KDE keeps the mean,
    so the value is 1 - mean r (up to the densities below 1e-6 that the authors' rule skips)."""
    conf = np.array([0.6, 0.7, 0.8])
    probs = np.stack([conf, 1 - conf], 1)
    assert compute_metrics(np.zeros(3, int), probs=probs, keys=("kde-ece",))["kde-ece"] == pytest.approx(0.3, abs=1e-8)


def test_selective_ties_are_the_expectation_over_tie_orders():
    """A tie of confidences: aurc / augrc / risk@cov equal the mean over every order of the tie."""
    from itertools import permutations

    conf = np.array([0.9, 0.7, 0.7, 0.7, 0.6])
    correct = np.array([1, 0, 1, 0, 1])
    labels = 1 - correct  # two_class: prediction 0, right when label 0
    probs = np.stack([conf, 1 - conf], 1)
    ours = compute_metrics(labels, probs=probs, keys=("aurc", "augrc", "risk@cov80"))
    vals = []
    for tie in set(permutations([0, 1, 0])):
        e = np.cumsum(1 - np.array([1, *tie, 1]))
        k = np.arange(1, 6)
        vals.append((np.mean(e / k), np.trapezoid(np.r_[0, e / 5], np.r_[0, k / 5]), e[3] / 4))
    np.testing.assert_allclose([ours["aurc"], ours["augrc"], ours["risk@cov80"]], np.mean(vals, axis=0), atol=1e-12)


def test_long_tail_keys_need_class_counts():
    logits, labels = synth(200, 4, 0)
    with pytest.raises(InputError, match="acc-few.*train class counts"):
        compute_metrics(labels, logits=logits, keys=("acc", "acc-few"))
    with pytest.raises(InputError, match="class_counts must be 4"):
        compute_metrics(labels, logits=logits, keys=("ece-many",), class_counts=[1, 2, 3])
    assert "acc" in compute_metrics(labels, logits=logits)  # the default set needs no counts


def test_long_tail_terciles_and_empty_group():
    logits, labels = synth(600, 10, 1)
    counts = np.arange(10, 0, -1) * 10  # 100 .. 10: terciles split 3 / 4 / 3
    m = compute_metrics(labels, logits=logits, keys=("acc-many", "acc-few"), class_counts=counts,
                        shot_thresholds="terciles")
    pred = logits.argmax(1)
    assert m["acc-many"] == pytest.approx(np.mean(pred[labels < 3] == labels[labels < 3]))
    assert m["acc-few"] == pytest.approx(np.mean(pred[labels > 6] == labels[labels > 6]))
    oltr = compute_metrics(labels, logits=logits, keys=("acc-many",), class_counts=counts)
    assert np.isnan(oltr["acc-many"])  # no class has more than 100 images
    res = bootstrap_metrics(labels, logits=logits, B=4, keys=("ece-few",), class_counts=counts,
                            shot_thresholds=(25, 80))
    assert res["samples"]["ece-few"].shape == (4,)


def test_mmce_weights_are_the_exact_weighted_double_sum():
    """sum_ij w_i w_j a_i a_j k(r_i, r_j) / (sum w)^2 for arbitrary counts, against the O(N^2) form."""
    from calbench.metrics.mmce_metric import mmce_squared_sum

    rng = np.random.default_rng(0)
    r = np.sort(rng.random(300))
    a = (rng.random(300) < r) - r
    w = rng.integers(0, 4, (3, 300)).astype(float)
    kern = np.exp(-np.abs(r[:, None] - r[None, :]) / 0.4)
    want = np.einsum("bi,ij,bj->b", w * a, kern, w * a)
    np.testing.assert_allclose(mmce_squared_sum(r, w * a), want, rtol=1e-11)


def test_class_wise_and_equal_mass_estimators_declare_their_conventions():
    """tace, sce and ece-sweep carry their binning and scope into every stored convention record."""
    from calbench.metrics import METRICS
    from calbench.metrics.conventions import metric_conventions

    conv = metric_conventions(("tace", "sce", "ece-sweep"), 15)
    assert conv["binning"] == {"tace": "equal-mass", "sce": "equal-width", "ece-sweep": "equal-mass"}
    assert conv["scope"] == {"tace": "class-wise", "sce": "class-wise", "ece-sweep": "top-label"}
    assert METRICS.get("ece-sweep").resample == "weights"
