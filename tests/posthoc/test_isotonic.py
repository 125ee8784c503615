"""isotonic: parity with scikit-learn's IsotonicRegression per class (renormalised) and with netcal's
IsotonicRegression (the same one-vs-rest construction), a hand-computed pooling case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.isotonic import IsotonicRegression

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator
from calbench.posthoc.isotonic import isotonic_thresholds


def overconfident(n=2000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.2
    return 2.0 * z, labels


def test_equals_scikit_learn_one_vs_rest_renormalised():
    val, val_labels = overconfident(seed=1)
    test, _ = overconfident(seed=2)
    p_val, p_test = softmax(val, axis=1), softmax(test, axis=1)
    mapped = np.stack([IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")
                       .fit(p_val[:, k], (val_labels == k).astype(float)).predict(p_test[:, k])
                       for k in range(p_val.shape[1])], axis=1)
    out = fit_calibrator("isotonic", val, val_labels).transform(test)
    np.testing.assert_allclose(out, mapped / mapped.sum(1, keepdims=True), rtol=0, atol=1e-12)


def test_equals_netcal_isotonic_regression():
    from netcal.binning import IsotonicRegression as NetcalIsotonic

    val, val_labels = overconfident(seed=3)
    test, _ = overconfident(seed=4)
    reference = NetcalIsotonic().fit(softmax(val, axis=1), val_labels).transform(softmax(test, axis=1))
    np.testing.assert_allclose(fit_calibrator("isotonic", val, val_labels).transform(test), reference,
                               rtol=0, atol=1e-12)


def test_thresholds_by_hand_with_ties():
    """Scores 0.1, 0.2, 0.2, 0.3, 0.4 with targets 0, 1, 0, 0, 1: the tie at 0.2 averages to 0.5, which
    violates the order against 0.3 (0), so the two pool to 1/3 (weights 2 and 1)."""
    x, y = isotonic_thresholds(np.array([0.2, 0.1, 0.3, 0.2, 0.4]), np.array([1.0, 0.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(x, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(y, [0.0, 1 / 3, 1 / 3, 1.0])


def test_no_hyper_parameters():
    with pytest.raises(ConfigError, match="isotonic: unknown hyper-parameter 'bins'"):
        create_calibrator("isotonic", bins=3)
