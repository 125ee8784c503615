"""beta: parity with netcal's BetaCalibration (binary, method "mle") on (top confidence, correct), the
a, b >= 0 constraint, and recovery of the identity on calibrated data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from calbench.posthoc import fit_calibrator


def overconfident(n=3000, k=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.2
    return 3.0 * z, labels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyro, inside netcal
def test_top_confidence_equals_netcal_beta_calibration():
    from netcal.scaling import BetaCalibration as NetcalBeta

    val, val_labels = overconfident(seed=1)
    test, _ = overconfident(seed=2)
    p_val, p_test = softmax(val, axis=1), softmax(test, axis=1)
    correct = (p_val.argmax(1) == val_labels).astype(np.float64)
    reference = NetcalBeta(method="mle").fit(p_val.max(1), correct, tensorboard=False).transform(p_test.max(1))
    out = fit_calibrator("beta", val, val_labels).transform(test)
    np.testing.assert_allclose(out[np.arange(len(test)), p_test.argmax(1)], reference, atol=2e-4)


def test_the_constraint_binds_when_confidence_is_anti_informative():
    """Correctness falling with confidence would need a < 0 (or b < 0); the fit stops at the bound."""
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 0.99, 5000)
    correct = rng.random(5000) < 1.4 - conf
    logits = np.stack([np.log(conf), np.log1p(-conf)], axis=1)
    beta = fit_calibrator("beta", logits, np.where(correct, 0, 1))
    a, b, _ = beta.coefficients
    assert min(a, b) == 0.0 and a >= 0 and b >= 0


def test_calibrated_confidences_give_nearly_the_identity():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 0.99, 100_000)
    correct = rng.random(conf.size) < conf
    logits = np.stack([np.log(conf), np.log1p(-conf)], axis=1)
    beta = fit_calibrator("beta", logits, np.where(correct, 0, 1))
    np.testing.assert_allclose(beta.coefficients, [1.0, 1.0, 0.0], atol=0.15)
    grid = np.linspace(0.55, 0.95, 9)
    np.testing.assert_allclose(beta.calibrated_confidence(grid), grid, atol=0.02)
