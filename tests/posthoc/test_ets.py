"""ets: parity with the authors' procedure (T by bounded L-BFGS-B on the MSE, weights by SLSQP on the
MSE of the mixture, as their `ets_calibrate`), the NLL variant, and a case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator


def overconfident(n=4000, k=10, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.0
    return scale * z, labels


def authors_ets(logits, labels):
    """The reference procedure, written from the paper's Eq. 8 and the authors' released code."""
    k = logits.shape[1]
    onehot = np.eye(k)[labels]

    def mse_t(t):
        return np.mean((softmax(logits / t[0], axis=1) - onehot) ** 2)

    t = minimize(mse_t, 1.0, method="L-BFGS-B", bounds=((0.05, 5.0),), tol=1e-12).x[0]
    p0, p1, p2 = softmax(logits / t, axis=1), softmax(logits, axis=1), np.full_like(onehot, 1.0 / k)

    def mse_w(w):
        p = w[0] * p0 + w[1] * p1 + w[2] * p2
        return np.mean((p / p.sum(1, keepdims=True) - onehot) ** 2)

    w = minimize(mse_w, (1.0, 0.0, 0.0), method="SLSQP", bounds=((0, 1),) * 3,
                 constraints={"type": "eq", "fun": lambda x: np.sum(x) - 1}, tol=1e-12).x
    return t, w


def test_equals_the_authors_procedure():
    val, val_labels = overconfident(seed=1)
    t, w = authors_ets(val, val_labels)
    ets = fit_calibrator("ets", val, val_labels)
    assert ets.temperature == pytest.approx(t, rel=1e-4)
    np.testing.assert_allclose(ets.weights, w, atol=1e-4)
    test, _ = overconfident(seed=2)
    reference = w[0] * softmax(test / t, axis=1) + w[1] * softmax(test, axis=1) + w[2] / test.shape[1]
    np.testing.assert_allclose(ets.transform(test), reference, atol=1e-5)


def test_labels_independent_of_the_logits_put_the_weight_on_uniform():
    """With labels drawn independently of the scores, the uniform member is the MSE- and NLL-optimal one."""
    rng = np.random.default_rng(0)
    logits, labels = 4.0 * rng.normal(size=(20000, 5)), rng.integers(0, 5, 20000)
    for loss in ("mse", "nll"):
        ets = fit_calibrator("ets", logits, labels, loss=loss)
        assert ets.weights[2] > 0.9 and ets.weights.sum() == pytest.approx(1.0)


def test_nll_variant_never_has_higher_validation_nll_than_its_temperature_alone():
    val, val_labels = overconfident(seed=3)
    ets = fit_calibrator("ets", val, val_labels, loss="nll")
    rows = np.arange(len(val_labels))
    nll = -np.log(ets.transform(val)[rows, val_labels]).mean()
    ts_only = -np.log(softmax(val / ets.temperature, axis=1)[rows, val_labels]).mean()
    assert nll <= ts_only + 1e-9


def test_bad_loss_names_the_key():
    with pytest.raises(ConfigError, match=r"ets\.loss: expected mse or nll, got 'ce'"):
        create_calibrator("ets", loss="ce")
