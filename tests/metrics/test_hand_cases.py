"""Small cases computed by hand, including the bin-edge conventions of docs/metrics.md."""

import numpy as np
import pytest

from calbench.metrics import compute_metrics
from calbench.metrics.binning import bin_edges, bin_index, equal_mass_groups


def two_class(conf, labels):
    conf = np.asarray(conf, dtype=np.float64)
    return np.stack([conf, 1.0 - conf], axis=1), np.asarray(labels)


def test_bin_index_lo_hi_convention():
    e = bin_edges(15)
    x = np.array([0.0, 1e-12, e[1], np.nextafter(e[1], 1), e[10], 1.0])
    assert bin_index(x, 15).tolist() == [0, 0, 0, 1, 9, 14]
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.random(10000), e])
    assert (bin_index(y, 15) == np.clip(np.searchsorted(e, y, "left") - 1, 0, 14)).all()


def test_confidence_on_an_edge_joins_the_bin_below():
    e10 = bin_edges(15)[10]
    probs, labels = two_class([e10, 0.65], [0, 1])  # both in (0.6, 0.6667]
    m = compute_metrics(labels, probs=probs)
    assert m["ece"] == pytest.approx(abs(0.5 - (e10 + 0.65) / 2), abs=1e-12)
    assert m["mce"] == pytest.approx(abs(0.5 - (e10 + 0.65) / 2), abs=1e-12)


def test_confidence_exactly_one_is_in_the_last_bin():
    probs, labels = two_class([1.0, 0.97], [1, 0])  # wrong at 1.0, right at 0.97
    m = compute_metrics(labels, probs=probs)
    assert m["ece"] == pytest.approx(abs(0.5 - 0.985), abs=1e-12)  # one bin, not torchmetrics' 0.515
    assert m["mce"] == pytest.approx(0.485, abs=1e-12)


def test_classwise_ece_keeps_zero_probabilities():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    labels = np.array([0, 2])
    # class 0: (0 + 0.5)/2; class 1: (0 + 0.5)/2; class 2: p = 0 twice, one positive -> 1/2
    assert compute_metrics(labels, probs=probs)["cece"] == pytest.approx((0.25 + 0.25 + 0.5) / 3, abs=1e-12)


def test_accuracy_nll_brier():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    labels = np.array([0, 2])
    m = compute_metrics(labels, probs=probs)
    assert m["acc"] == 0.5
    assert m["nll"] == pytest.approx((-np.log(0.7) - np.log(0.3)) / 2, abs=1e-12)
    assert m["brier"] == pytest.approx((0.09 + 0.04 + 0.01 + 0.04 + 0.25 + 0.49) / 2, abs=1e-12)


def test_nll_from_logits_uses_log_softmax():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    m = compute_metrics(np.array([1, 1]), logits=logits)
    assert m["nll"] == pytest.approx(500.0)


def test_aece_groups_differ_by_at_most_one():
    assert equal_mass_groups(5, 2).tolist() == [0, 3, 5]
    assert equal_mass_groups(3, 5).tolist() == [0, 1, 2, 3, 3, 3]
    conf = [0.55, 0.6, 0.7, 0.9, 0.95]
    probs, labels = two_class(conf, [1, 0, 0, 0, 1])  # correct: 0, 1, 1, 1, 0
    # groups {0.55, 0.6, 0.7} and {0.9, 0.95}
    want = (abs(2 - (0.55 + 0.6 + 0.7)) + abs(1 - (0.9 + 0.95))) / 5
    assert compute_metrics(labels, probs=probs, bins=2)["aece"] == pytest.approx(want, abs=1e-12)


def test_mce_is_the_worst_bin():
    probs, labels = two_class([0.55, 0.95, 0.96], [1, 0, 0])  # bin (0.533,0.6]: gap .55, bin last: 0.045
    m = compute_metrics(labels, probs=probs)
    assert m["mce"] == pytest.approx(0.55, abs=1e-12)
    assert m["ece"] == pytest.approx((0.55 + abs(2 - 1.91)) / 3, abs=1e-12)


def test_miou_segmentation_with_ignore_index():
    labels = np.array([[[0, 1], [1, 255]]])
    logits = np.zeros((1, 2, 2, 2))
    logits[0, 0] = [[5, 5], [-5, 5]]  # predicts class 0 at (0,0), (0,1), (1,1); class 1 at (1,0)
    m = compute_metrics(labels, logits=logits, ignore_index=255)
    # kept pixels: (0,0) y0 p0, (0,1) y1 p0, (1,0) y1 p1. IoU0 = 1/2, IoU1 = 1/2
    assert m["miou"] == pytest.approx(0.5)
    assert m["acc"] == pytest.approx(2 / 3)
    assert set(m) == {"acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece", "miou", "ece-debiased", "ks", "aurc", "e-aurc"}


def test_sece_matches_exact_kernel_regression():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 600)
    labels = (rng.random(600) > conf ** 1.5).astype(int)  # mis-calibrated: label 0 when correct
    probs, labels = two_class(conf, labels)
    d = conf[:, None] - conf[None, :]
    k = np.exp(-0.5 * (d / 0.01) ** 2)
    c = (labels == 0).astype(float)
    exact = np.mean(np.abs(k @ c / k.sum(1) - conf))
    assert compute_metrics(labels, probs=probs)["sece"] == pytest.approx(exact, abs=3e-4)


def test_reliability_bins_agree_with_ece():
    from calbench.metrics import reliability_bins

    probs, labels = two_class([0.55, 0.95, 0.96, 1.0], [1, 0, 0, 1])
    rb = reliability_bins(labels, probs=probs)
    assert rb["count"].sum() == 4 and rb["count"][14] == 3 and rb["count"][8] == 1
    assert np.isnan(rb["accuracy"][0])
    ece = np.nansum(rb["count"] * np.abs(rb["accuracy"] - rb["confidence"])) / 4
    assert ece == pytest.approx(compute_metrics(labels, probs=probs)["ece"], abs=1e-12)
