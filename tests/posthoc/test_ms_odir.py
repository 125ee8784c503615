"""ms-odir: the objective and gradient by hand and by finite differences, no regularisation equals
scikit-learn's unpenalised multinomial logistic regression on the logits, a huge off-diagonal penalty
gives vector scaling, bad hyper-parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator
from calbench.posthoc.ms_odir import odir_objective


def skewed(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.5
    return 2.0 * z + np.linspace(-1, 1, k), labels


def test_objective_by_hand_and_gradient_by_finite_differences():
    logits, labels = skewed(n=50, k=3)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=3 * 3 + 3)
    w, b = theta[:9].reshape(3, 3), theta[9:]
    nll = -log_softmax(logits @ w.T + b, axis=1)[np.arange(50), labels].mean()
    off = (w ** 2).sum() - (np.diag(w) ** 2).sum()
    value, grad = odir_objective(theta, logits, labels, 0.3, 0.2)
    assert value == pytest.approx(nll + 0.3 / 6 * off + 0.2 / 3 * (b ** 2).sum(), rel=1e-12)
    step = 1e-6
    numeric = [(odir_objective(theta + step * e, logits, labels, 0.3, 0.2)[0]
                - odir_objective(theta - step * e, logits, labels, 0.3, 0.2)[0]) / (2 * step) for e in np.eye(12)]
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_unregularised_equals_scikit_learn_multinomial_logistic_regression():
    """Same model (softmax of an affine map of the logits), same unpenalised likelihood; softmax is
    invariant to a shared shift, so probabilities are compared, not parameters."""
    from sklearn.linear_model import LogisticRegression

    val, val_labels = skewed(seed=2)
    test, _ = skewed(seed=3)
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(val, val_labels)
    ms = fit_calibrator("ms-odir", val, val_labels, reg_lambda=0.0, reg_mu=0.0)
    np.testing.assert_allclose(softmax(ms.transform(test), axis=1), reference.predict_proba(test), atol=1e-5)


def test_a_huge_off_diagonal_penalty_gives_vector_scaling():
    val, val_labels = skewed(seed=4)
    test, _ = skewed(seed=5)
    ms = fit_calibrator("ms-odir", val, val_labels, reg_lambda=1e5, reg_mu=0.0, max_iter=5000)
    assert np.abs(ms.weight - np.diag(np.diag(ms.weight))).max() < 1e-3
    vs = fit_calibrator("vs", val, val_labels)
    np.testing.assert_allclose(softmax(ms.transform(test), axis=1), softmax(vs.transform(test), axis=1), atol=1e-4)


@pytest.mark.parametrize("hparams, key", [({"reg_lambda": -1.0}, "ms-odir.reg_lambda"),
                                          ({"reg_mu": -0.1}, "ms-odir.reg_mu"),
                                          ({"max_iter": 0}, "ms-odir.max_iter"),
                                          ({"reg_lambda": "big"}, "ms-odir.reg_lambda")])
def test_bad_hyper_parameter_names_the_key(hparams, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_calibrator("ms-odir", **hparams)
