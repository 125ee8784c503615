"""The fast fits of vs and ms-odir against their former plain fits (scipy L-BFGS-B on the numpy
objective, from the identity): the new solution's objective is never worse than the former one's by
more than 1e-6 (relative) on seeded problems, the Newton pieces (Hessian-vector product, 2 x 2
blocks) equal finite differences / a dense Hessian (ms-odir's profile pieces are checked against
`odir_objective` in test_ms_odir.py); ets and irm block/pooled passes equal the full-array formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc import fit_calibrator
from calbench.posthoc.ms_odir import odir_objective
from calbench.posthoc.vs import DiagonalAffineProblem, fit_diagonal_affine


def problem(n, k, seed, peak=1.0):
    """Over-confident logits (a boosted, sometimes wrong, class) with a per-class offset."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    right = rng.random(n) < 0.7
    target = np.where(right, labels, (labels + rng.integers(1, k, n)) % k)
    logits[np.arange(n), target] += rng.uniform(2.0, 5.0, n)
    return peak * logits + np.linspace(-1.0, 1.0, k), labels


def nll(logits, labels, w, b):
    return float(-log_softmax(logits * w + b, axis=1)[np.arange(len(labels)), labels].mean())


def former_vs(logits, labels):
    """vs version 1: L-BFGS-B (scipy defaults, maxiter 500) on the numpy NLL from the identity."""
    n, k = logits.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0

    def objective(theta):
        logp = log_softmax(logits * theta[:k] + theta[k:], axis=1)
        diff = (np.exp(logp) - onehot) / n
        return float(-(logp * onehot).sum() / n), np.concatenate([(diff * logits).sum(0), diff.sum(0)])

    x = minimize(objective, np.concatenate([np.ones(k), np.zeros(k)]), jac=True, method="L-BFGS-B",
                 options={"maxiter": 500}).x
    return x[:k], x[k:]


def former_ms_odir(logits, labels, off_weight, bias_weight):
    """ms-odir version 1's full fit (L-BFGS-B, gtol 1e-10, ftol 1e-14) from the identity."""
    k = logits.shape[1]
    theta = np.concatenate([np.eye(k).ravel(), np.zeros(k)])
    return minimize(odir_objective, theta, args=(logits, labels, off_weight, bias_weight), jac=True,
                    method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-14}).x


CASES = [(2000, 2, 0, 1.0), (2000, 10, 1, 1.0), (3000, 10, 2, 3.0), (4000, 50, 3, 1.0), (4000, 50, 4, 4.0)]


@pytest.mark.parametrize("n, k, seed, peak", CASES)
def test_vs_is_at_least_as_good_as_the_former_fit(n, k, seed, peak):
    """reg=0: the former fit minimised the unpenalised NLL, so the solvers are compared on that objective."""
    logits, labels = problem(n, k, seed, peak)
    new = fit_calibrator("vs", logits, labels, reg=0.0)
    former = former_vs(logits, labels)
    assert nll(logits, labels, new.weight, new.bias) <= nll(logits, labels, *former) * (1 + 1e-6)
    assert abs(new.bias.sum()) < 1e-9  # centred: softmax ignores a shift of b


@pytest.mark.parametrize("n, k, seed, peak", [(800, 2, 0, 1.0), (1000, 5, 1, 1.0), (1000, 8, 2, 3.0)])
def test_ms_odir_is_at_least_as_good_as_the_former_fit(n, k, seed, peak):
    logits, labels = problem(n, k, seed, peak)
    new = fit_calibrator("ms-odir", logits, labels, max_iter=2000, reg_lambda=0.01, reg_mu=0.01)
    theta_new = np.concatenate([new.weight.ravel(), new.bias])
    value_new = odir_objective(theta_new, logits, labels, 0.01, 0.01)[0]
    value_former = odir_objective(former_ms_odir(logits, labels, 0.01, 0.01), logits, labels, 0.01, 0.01)[0]
    assert value_new <= value_former * (1 + 1e-6)


def test_diagonal_fit_reaches_its_gradient_tolerance_with_a_bias_penalty():
    logits, labels = problem(3000, 20, 5, 2.0)
    w, b = fit_diagonal_affine(logits, labels, bias_penalty=0.05, gtol=1e-10)
    value, grad, _ = DiagonalAffineProblem(logits, labels, 0.05).evaluate(w, b)
    assert max(np.abs(grad[0]).max(), np.abs(grad[1]).max()) <= 1e-10
    assert value == pytest.approx(nll(logits, labels, w, b) + 0.05 * float(b @ b), rel=1e-12)


def dense_hessian(logits, labels, w, b, bias_penalty, weight_penalty=0.0):
    """The (2K x 2K) Hessian in (w, b) by central differences of the gradient."""
    k = logits.shape[1]
    problem_ = DiagonalAffineProblem(logits, labels, bias_penalty, weight_penalty=weight_penalty)
    theta, step, columns = np.concatenate([w, b]), 1e-5, []
    for e in np.eye(2 * k):
        grads = [np.concatenate(problem_.evaluate((theta + s * step * e)[:k], (theta + s * step * e)[k:])[1])
                 for s in (1.0, -1.0)]
        columns.append((grads[0] - grads[1]) / (2 * step))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("weight_penalty", [0.0, 0.2])
def test_hessian_products_and_blocks_equal_finite_differences(weight_penalty):
    logits, labels = problem(400, 5, 6, 2.0)
    rng = np.random.default_rng(7)
    w, b, v = 1.0 + 0.2 * rng.normal(size=5), rng.normal(size=5), rng.normal(size=10)
    hessian = dense_hessian(logits, labels, w, b, 0.3, weight_penalty)
    problem_ = DiagonalAffineProblem(logits, labels, 0.3, weight_penalty=weight_penalty)
    _, _, (hww, hwb, hbb) = problem_.evaluate(w, b)
    product = np.concatenate(problem_.hessian_times(v[:5], v[5:]))
    np.testing.assert_allclose(product, hessian @ v, rtol=1e-6, atol=1e-8)
    diagonal = np.arange(5)
    np.testing.assert_allclose(hww, hessian[diagonal, diagonal], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hwb, hessian[diagonal, diagonal + 5], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hbb, hessian[diagonal + 5, diagonal + 5], rtol=1e-6, atol=1e-9)


def test_ets_block_passes_equal_the_full_array_formulas():
    """ets's blockwise MSE, its beta-derivative and the members' Gram matrix against the plain
    N x K formulas (the derivative also against central differences)."""
    from scipy.special import softmax

    from calbench.posthoc.ets import mse_and_grad_beta, mse_gram

    logits, labels = problem(700, 30, 10, 2.0)  # 700 rows: several blocks and a short last one
    onehot = np.eye(30)[labels]

    def mse(beta):
        return float(((softmax(beta * logits, axis=1) - onehot) ** 2).mean())

    value, grad = mse_and_grad_beta(0.7, logits, labels)
    assert value == pytest.approx(mse(0.7), rel=1e-12)
    assert grad == pytest.approx((mse(0.7 + 1e-6) - mse(0.7 - 1e-6)) / 2e-6, rel=1e-6)
    residuals = [softmax(logits / 1.8, axis=1) - onehot, softmax(logits, axis=1) - onehot, 1.0 / 30 - onehot]
    full = np.array([[float((a * b).mean()) for b in residuals] for a in residuals])
    np.testing.assert_allclose(mse_gram(logits, labels, 1.8), full, rtol=1e-12)


@pytest.mark.parametrize("n, k, seed", [(300, 2, 11), (500, 7, 12), (2000, 40, 13)])
def test_irm_pooled_fit_equals_isotonic_on_the_pooled_pairs(n, k, seed):
    from calbench.posthoc.hb import probabilities
    from calbench.posthoc.irm import pooled_thresholds
    from calbench.posthoc.isotonic import isotonic_thresholds

    logits, labels = problem(n, k, seed)
    logits[:50] = np.round(logits[:50])  # tied scores
    probs = probabilities(logits)
    x, y = pooled_thresholds(probs, labels)
    x_ref, y_ref = isotonic_thresholds(probs.ravel(), np.eye(k)[labels].ravel())
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-15)
