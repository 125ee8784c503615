"""hb: parity with Kumar et al.'s `uncertainty-calibration` histogram calibrators (equal-mass bins, top-label
and marginal) and with netcal's HistogramBinning (equal-width), a hand-computed case, bad hyper-parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from calbench.errors import ConfigError, InputError
from calbench.posthoc import create_calibrator, fit_calibrator


def overconfident(n=3000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.2
    return 3.0 * z, labels


def test_top_label_equals_kumar_histogram_top_calibrator():
    from calibration import HistogramTopCalibrator

    val, val_labels = overconfident(seed=1)
    test, _ = overconfident(seed=2)
    reference = HistogramTopCalibrator(len(val), num_bins=15)
    reference.train_calibration(softmax(val, axis=1), val_labels)
    out = fit_calibrator("hb", val, val_labels).transform(test)
    top = softmax(test, axis=1).argmax(1)
    np.testing.assert_allclose(out[np.arange(len(test)), top], reference.calibrate(softmax(test, axis=1)),
                               rtol=0, atol=1e-12)


def test_class_wise_equals_kumar_histogram_marginal_calibrator_renormalised():
    """The package leaves the K marginal values unnormalised; calbench divides each row by its sum."""
    from calibration import HistogramMarginalCalibrator

    val, val_labels = overconfident(seed=3)
    test, _ = overconfident(seed=4)
    reference = HistogramMarginalCalibrator(len(val), num_bins=10)
    reference.train_calibration(softmax(val, axis=1), val_labels)
    marginal = reference.calibrate(softmax(test, axis=1))
    out = fit_calibrator("hb", val, val_labels, mode="class-wise", bins=10).transform(test)
    np.testing.assert_allclose(out, marginal / marginal.sum(1, keepdims=True), rtol=0, atol=1e-12)


def test_equal_width_equals_netcal_histogram_binning():
    """netcal's top-label case is its binary model on (confidence, correct); its multi-class model is
    one-vs-rest, renormalised, which is calbench's class-wise mode. netcal transforms only equal-width bins."""
    from netcal.binning import HistogramBinning

    val, val_labels = overconfident(seed=5)
    test, _ = overconfident(seed=6)
    p_val, p_test = softmax(val, axis=1), softmax(test, axis=1)
    correct = (p_val.argmax(1) == val_labels).astype(np.int64)
    top = HistogramBinning(bins=15).fit(p_val.max(1), correct).transform(p_test.max(1))
    ours = fit_calibrator("hb", val, val_labels, binning="equal-width").transform(test)
    np.testing.assert_allclose(ours[np.arange(len(test)), p_test.argmax(1)], top, rtol=0, atol=1e-12)
    classwise = HistogramBinning(bins=15).fit(p_val, val_labels).transform(p_test)
    ours = fit_calibrator("hb", val, val_labels, binning="equal-width", mode="class-wise").transform(test)
    np.testing.assert_allclose(ours, classwise, rtol=0, atol=1e-12)


def test_hand_computed_top_label_case():
    """Six two-class rows with top confidences 0.55 .. 0.95 and 3 equal-mass bins of two rows each:
    edges half way between runs, each bin's value its accuracy, the other class gets the rest."""
    conf = np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    logits = np.stack([np.log(conf), np.log(1 - conf)], axis=1)
    labels = np.array([1, 0, 0, 0, 1, 0])  # correct: F T | T T | F T
    hb = fit_calibrator("hb", logits, labels, bins=3)
    np.testing.assert_allclose(hb.edges[0], [0.65, 0.85])
    np.testing.assert_allclose(hb.values[0], [0.5, 1.0, 0.5])
    query = np.log(np.array([[0.6, 0.4], [0.3, 0.7], [0.86, 0.14]]))
    np.testing.assert_allclose(hb.transform(query), [[0.5, 0.5], [0.0, 1.0], [0.5, 0.5]], atol=1e-12)


def test_an_empty_bin_maps_to_its_midpoint_and_rows_are_probabilities():
    logits = np.zeros((8, 3))  # every confidence is 1/3: all ties, one run holds every row
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0])
    out = fit_calibrator("hb", logits, labels, bins=4).transform(np.array([[5.0, 0.0, 0.0]]))
    assert np.all(out >= 0) and out.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("hparams, key", [({"bins": 0}, "hb.bins"), ({"mode": "top"}, "hb.mode"),
                                          ({"binning": "quantile"}, "hb.binning"), ({"bins": 2.5}, "hb.bins")])
def test_bad_hyper_parameter_names_the_key(hparams, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_calibrator("hb", **hparams)


def test_another_class_count_at_transform_is_one_line():
    val, val_labels = overconfident(k=5)
    with pytest.raises(InputError, match="hb: fitted on 5 classes"):
        fit_calibrator("hb", val, val_labels).transform(np.zeros((3, 4)))
