"""ms-odir: the objective and gradient by hand and by finite differences; the profile's pieces (the
inner solve with an offset, the envelope gradient, the residual pass) against the plain float64
reference `odir_objective`; the fit against an independent float64 scipy L-BFGS-B solve of the same
objective; the float32 products against the float64 solve; `reg_norm` is the paper's normalisation;
no regularisation equals scikit-learn's unpenalised multinomial logistic regression; a huge
off-diagonal penalty gives vector scaling; a capped fit warns; bad hyper-parameters are one line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator
from calbench.posthoc.ms_odir import (FLOAT32_FROM_CLASSES, GRADIENT_TOLERANCE, ProfiledOdir, fit_odir,
                                      odir_objective, penalty_weights)


def skewed(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.5
    return 2.0 * z + np.linspace(-1, 1, k), labels


def theta_of(weight, bias):
    return np.concatenate([weight.ravel(), bias])


def scipy_reference(logits, labels, off_weight, bias_weight):
    """An independent solve: scipy's L-BFGS-B on the full float64 objective from the identity, far
    tighter than calbench's tolerance."""
    k = logits.shape[1]
    result = minimize(odir_objective, theta_of(np.eye(k), np.zeros(k)), args=(logits, labels, off_weight, bias_weight),
                      jac=True, method="L-BFGS-B", options={"maxiter": 20_000, "gtol": 1e-11, "ftol": 1e-16})
    return result.x[: k * k].reshape(k, k), result.x[k * k:]


def test_objective_by_hand_and_gradient_by_finite_differences():
    logits, labels = skewed(n=50, k=3)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=3 * 3 + 3)
    w, b = theta[:9].reshape(3, 3), theta[9:]
    nll = -log_softmax(logits @ w.T + b, axis=1)[np.arange(50), labels].mean()
    off = (w ** 2).sum() - (np.diag(w) ** 2).sum()
    value, grad = odir_objective(theta, logits, labels, 0.3, 0.2)
    assert value == pytest.approx(nll + 0.3 * off + 0.2 * (b ** 2).sum(), rel=1e-12)
    step = 1e-6
    numeric = [(odir_objective(theta + step * e, logits, labels, 0.3, 0.2)[0]
                - odir_objective(theta - step * e, logits, labels, 0.3, 0.2)[0]) / (2 * step) for e in np.eye(12)]
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_profile_pieces_equal_the_plain_reference():
    """At a random off-diagonal O: the inner (d, b) solve with the offset z O^T zeroes the reference
    gradient in d and b, the profile's value is the reference objective there, and its gradient is the
    reference gradient's off-diagonal part (the envelope theorem)."""
    logits, labels = skewed(n=700, k=6, seed=11)  # 700 rows: several row blocks and a short last one
    rng = np.random.default_rng(12)
    off = 0.05 * rng.normal(size=(6, 6))
    np.fill_diagonal(off, 0.0)
    problem = ProfiledOdir(logits, labels, 0.3, 0.2)
    value, d, b = problem.point(off, logits @ off.T, None, 1e-9)
    value_ref, grad_ref = odir_objective(theta_of(off + np.diag(d), b), logits, labels, 0.3, 0.2)
    grad_w, grad_b = grad_ref[:36].reshape(6, 6), grad_ref[36:]
    assert value == pytest.approx(value_ref, rel=1e-13)
    assert max(np.abs(np.diag(grad_w)).max(), np.abs(grad_b).max()) <= 1e-9
    inner_ref = max(np.abs(np.diag(grad_w)).max(), np.abs(grad_b).max())
    np.fill_diagonal(grad_w, 0.0)
    grad, inner = problem.gradient({"off": off, "d": d, "b": b})
    np.testing.assert_allclose(grad, grad_w, rtol=1e-10, atol=1e-14)
    assert inner == pytest.approx(inner_ref, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("n, k, seed, off_weight, bias_weight",
                         [(600, 2, 0, 0.5, 0.01), (1500, 5, 1, 0.5, 0.01), (2000, 8, 2, 0.01, 0.001),
                          (2000, 12, 3, 2.0, 0.0)])
def test_fit_equals_an_independent_float64_solve(n, k, seed, off_weight, bias_weight):
    logits, labels = skewed(n=n, k=k, seed=seed)
    test, _ = skewed(n=500, k=k, seed=seed + 100)
    weight, bias, info = fit_odir(logits, labels, off_weight, bias_weight, max_iter=500)
    ref_weight, ref_bias = scipy_reference(logits, labels, off_weight, bias_weight)
    assert info["converged"] and info["max_gradient"] <= GRADIENT_TOLERANCE
    value = odir_objective(theta_of(weight, bias), logits, labels, off_weight, bias_weight)[0]
    value_ref = odir_objective(theta_of(ref_weight, ref_bias), logits, labels, off_weight, bias_weight)[0]
    assert value <= value_ref + 1e-10
    np.testing.assert_allclose(softmax(test @ weight.T + bias, axis=1), softmax(test @ ref_weight.T + ref_bias, axis=1),
                               atol=1e-5)


def test_float32_products_match_the_float64_solve():
    """The default precision from FLOAT32_FROM_CLASSES classes: float32 products, float64 sums."""
    k = FLOAT32_FROM_CLASSES + 6
    logits, labels = skewed(n=3000, k=k, seed=5)
    test, _ = skewed(n=1000, k=k, seed=6)
    fast = fit_odir(logits, labels, 0.5, 0.01, max_iter=200)
    exact = fit_odir(logits, labels, 0.5, 0.01, max_iter=200, precision=np.float64)
    assert fast[2]["converged"] and exact[2]["converged"]
    values = [odir_objective(theta_of(w, b), logits, labels, 0.5, 0.01)[0] for w, b, _ in (fast, exact)]
    assert values[0] == pytest.approx(values[1], rel=1e-9)
    probs = [softmax(test @ w.T + b, axis=1) for w, b, _ in (fast, exact)]
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)


def test_an_unsolved_inner_problem_is_re_solved_before_the_fit_claims_convergence(monkeypatch):
    """With the inner (d, b) solves switched off (zero Newton steps) except the re-solve at a hundredth
    of the tolerance, only the check of the inner gradient can make the fit solve them: it re-solves,
    and what it calls converged is, by the plain reference gradient over all K (K + 1) parameters."""
    import calbench.posthoc.ms_odir as ms_odir

    logits, labels = skewed(n=2000, k=6, seed=9)
    full_solve, re_solves = ms_odir.fit_diagonal_affine, []

    def no_newton_step(*args, gtol, **kwargs):
        re_solves.append(gtol <= GRADIENT_TOLERANCE / 100)
        return full_solve(*args, gtol=gtol, **({} if re_solves[-1] else {"max_steps": 0}), **kwargs)

    monkeypatch.setattr(ms_odir, "fit_diagonal_affine", no_newton_step)
    weight, bias, info = fit_odir(logits, labels, 0.5, 0.01, max_iter=500)
    assert info["converged"] and any(re_solves)
    grad = odir_objective(theta_of(weight, bias), logits, labels, 0.5, 0.01)[1]
    assert np.abs(grad).max() <= GRADIENT_TOLERANCE * 1.001


def test_reg_norm_is_the_papers_normalised_penalty():
    logits, labels = skewed(n=1000, k=5, seed=7)
    assert penalty_weights(5, 40.0, 1.5, True) == (40.0 / 20, 1.5 / 5)
    paper = fit_calibrator("ms-odir", logits, labels, reg_lambda=40.0, reg_mu=1.5, reg_norm=True)
    code = fit_calibrator("ms-odir", logits, labels, reg_lambda=2.0, reg_mu=0.3)
    np.testing.assert_allclose(paper.weight, code.weight, atol=1e-12)
    np.testing.assert_allclose(paper.bias, code.bias, atol=1e-12)


def test_unregularised_equals_scikit_learn_multinomial_logistic_regression():
    """Same model (softmax of an affine map of the logits), same unpenalised likelihood; softmax is
    invariant to a shared shift, so probabilities are compared, not parameters."""
    from sklearn.linear_model import LogisticRegression

    val, val_labels = skewed(seed=2)
    test, _ = skewed(seed=3)
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(val, val_labels)
    ms = fit_calibrator("ms-odir", val, val_labels, reg_lambda=0.0, reg_mu=0.0, max_iter=1000)
    np.testing.assert_allclose(softmax(ms.transform(test), axis=1), reference.predict_proba(test), atol=1e-5)


def test_a_huge_off_diagonal_penalty_gives_vector_scaling():
    val, val_labels = skewed(seed=4)
    test, _ = skewed(seed=5)
    ms = fit_calibrator("ms-odir", val, val_labels, reg_lambda=1e5, reg_mu=0.0)
    assert np.abs(ms.weight - np.diag(np.diag(ms.weight))).max() < 1e-6
    vs = fit_calibrator("vs", val, val_labels, reg=0.0)  # unpenalised, as ms-odir's diagonal with reg_mu=0
    np.testing.assert_allclose(softmax(ms.transform(test), axis=1), softmax(vs.transform(test), axis=1), atol=1e-5)


def test_a_capped_fit_warns_in_one_line_and_keeps_its_last_point():
    val, val_labels = skewed(n=2000, k=6, seed=8)
    with pytest.warns(RuntimeWarning, match=r"ms-odir: not converged after 1 steps") as caught:
        capped = fit_calibrator("ms-odir", val, val_labels, reg_lambda=0.001, reg_mu=0.0, max_iter=1)
    assert "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = fit_calibrator("ms-odir", val, val_labels, reg_lambda=0.001, reg_mu=0.0)
    values = [odir_objective(theta_of(c.weight, c.bias), val, val_labels, 0.001, 0.0)[0] for c in (capped, full)]
    assert values[1] < values[0]


def test_an_empty_validation_split_leaves_the_identity():
    ms = fit_calibrator("ms-odir", np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    np.testing.assert_array_equal(ms.weight, np.eye(3))
    np.testing.assert_array_equal(ms.bias, np.zeros(3))


@pytest.mark.parametrize("hparams, key", [({"reg_lambda": -1.0}, "ms-odir.reg_lambda"),
                                          ({"reg_mu": -0.1}, "ms-odir.reg_mu"),
                                          ({"max_iter": 0}, "ms-odir.max_iter"),
                                          ({"reg_lambda": "big"}, "ms-odir.reg_lambda"),
                                          ({"reg_norm": "yes"}, "ms-odir.reg_norm")])
def test_bad_hyper_parameter_names_the_key(hparams, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        create_calibrator("ms-odir", **hparams)
    assert "\n" not in str(caught.value)
