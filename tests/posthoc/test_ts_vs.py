"""Temperature scaling recovers a known temperature; vector scaling fits at least as well as TS
unpenalised; its ridge toward the identity keeps a separable validation set's fit finite (near TS's
test NLL where the unpenalised one diverges, with a warning), fades on a large validation set, has
the gradient of finite differences and the minimum of an independent solve; reg=0 is the former fit."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator
from calbench.posthoc.vs import CHUNK_ROWS, DiagonalAffineProblem, VectorScaling, separated_classes


def synthetic(temperature, n=20000, k=10, seed=0):
    """Labels drawn from softmax(z); the model reports z * temperature (so the right T is `temperature`)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2.0
    labels = torch.multinomial(F.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5, 40.0])
def test_ts_recovers_a_known_temperature_with_no_cap(true_t):
    logits, labels = synthetic(true_t)
    ts = fit_calibrator("ts", logits.numpy(), labels.numpy())
    assert ts.temperature == pytest.approx(true_t, rel=0.02)


def test_ts_lowers_nll_keeps_argmax_and_divides_in_float64():
    logits, labels = synthetic(3.0, n=5000)
    z32 = logits.float().numpy()
    ts = fit_calibrator("ts", z32, labels.numpy())
    scaled = ts.transform(z32)
    assert scaled.dtype == np.float64
    np.testing.assert_array_equal(scaled, z32.astype(np.float64) / ts.temperature)
    assert F.cross_entropy(torch.from_numpy(scaled), labels) < F.cross_entropy(logits, labels)
    assert np.array_equal(scaled.argmax(1), z32.argmax(1))


def test_torch_and_numpy_inputs_fit_the_same_temperature():
    logits, labels = synthetic(2.0, n=3000)
    a = fit_calibrator("ts", logits.numpy(), labels.numpy())
    b = fit_calibrator("ts", logits, labels)
    assert a.temperature == b.temperature
    out = b.transform(logits.float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_vector_scaling_lowers_nll_at_least_as_much_as_ts():
    logits, labels = synthetic(3.0, n=5000)
    skewed = (logits + torch.linspace(-2, 2, 10, dtype=torch.float64)).numpy()
    out = fit_calibrator("vs", skewed, labels.numpy()).transform(skewed)
    assert out.shape == skewed.shape

    def nll(z):
        return F.cross_entropy(torch.from_numpy(np.asarray(z)), labels).item()

    # unpenalised, vector scaling contains temperature scaling (w = 1/T, b = 0), so it fits at least as well
    unpenalised = fit_calibrator("vs", skewed, labels.numpy(), reg=0.0).transform(skewed)
    assert nll(unpenalised) <= nll(fit_calibrator("ts", skewed, labels.numpy()).transform(skewed)) + 1e-9
    assert nll(out) < nll(skewed) and nll(unpenalised) <= nll(out)


def test_empty_validation_split_leaves_the_identity():
    empty, none = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    z = np.arange(8.0).reshape(2, 4)
    for name in ("ts", "vs"):
        np.testing.assert_array_equal(fit_calibrator(name, empty, none).transform(z), z)


def accurate(n, k, rng, wrong=0.03):
    """An accurate, over-confident network: the label's logit (a wrong class's on `wrong` of the rows)
    boosted by 4-7, times 2; on ~100 rows some class is then often separated by its own logit."""
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    target = np.where(rng.random(n) < wrong, (labels + rng.integers(1, k, n)) % k, labels)
    z[np.arange(n), target] += rng.uniform(4.0, 7.0, n)
    return 2.0 * z, labels


def mean_nll(logits, labels):
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def test_a_separable_validation_set_gets_a_finite_fit_near_ts():
    rng = np.random.default_rng(0)
    val, val_labels = accurate(120, 5, rng)
    test, test_labels = accurate(20000, 5, rng)
    assert separated_classes(val, val_labels).tolist() == [2]
    with pytest.warns(RuntimeWarning, match=r"vs: 1 class\(es\) \(2\) separated by their own logit") as caught:
        diverged = fit_calibrator("vs", val, val_labels, reg=0.0)
    assert "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge = fit_calibrator("vs", val, val_labels)
    ts = fit_calibrator("ts", val, val_labels)
    assert np.abs(diverged.weight).max() > 20 and mean_nll(diverged.transform(test), test_labels) > 1.0
    assert np.all(np.isfinite(ridge.weight)) and np.abs(ridge.weight).max() < 2 and np.abs(ridge.bias).max() < 2
    assert mean_nll(ridge.transform(test), test_labels) < mean_nll(ts.transform(test), test_labels) + 0.05
    assert mean_nll(ridge.transform(test), test_labels) < mean_nll(test, test_labels)


def penalised_reference(theta, logits, labels, reg):
    """mean NLL of softmax(w z + b) + (reg / N)(|w - 1|^2 + |b|^2) at theta = [w, b], plain float64."""
    n, k = logits.shape
    w, b = theta[:k], theta[k:]
    return mean_nll(logits * w + b, labels) + reg / n * (float((w - 1) @ (w - 1)) + float(b @ b))


def test_penalised_value_and_gradient_equal_the_formula_and_finite_differences():
    rng = np.random.default_rng(4)
    logits, labels = accurate(300, 4, rng, wrong=0.2)
    reg, k = 7.0, 4
    theta = np.concatenate([1.0 + 0.3 * rng.normal(size=k), rng.normal(size=k)])
    penalty = reg / len(labels)
    problem = DiagonalAffineProblem(logits, labels, penalty, weight_penalty=penalty)
    value, grad, _ = problem.evaluate(theta[:k], theta[k:])
    assert value == pytest.approx(penalised_reference(theta, logits, labels, reg), rel=1e-12)
    step = 1e-6
    numeric = [(penalised_reference(theta + step * e, logits, labels, reg)
                - penalised_reference(theta - step * e, logits, labels, reg)) / (2 * step) for e in np.eye(2 * k)]
    np.testing.assert_allclose(np.concatenate(grad), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reg", [0.5, 20.0])
def test_the_penalised_fit_is_the_minimum_of_an_independent_solve(reg):
    rng = np.random.default_rng(5)
    logits, labels = accurate(100, 6, rng)  # separable at reg = 0: the minimum exists only penalised
    fitted = fit_calibrator("vs", logits, labels, reg=reg)
    ours = penalised_reference(np.concatenate([fitted.weight, fitted.bias]), logits, labels, reg)
    reference = minimize(penalised_reference, np.concatenate([np.ones(6), np.zeros(6)]), args=(logits, labels, reg),
                         method="L-BFGS-B", options={"maxiter": 20_000, "gtol": 1e-12, "ftol": 1e-16})
    assert ours <= reference.fun + 1e-10
    np.testing.assert_allclose(fitted.weight, reference.x[:6], atol=1e-4)


def test_reg_zero_reproduces_the_former_unpenalised_fit():
    """On a non-separable set: the (w, b) of vs version 2 (the unpenalised Newton-CG fit) for these data."""
    logits, labels = accurate(400, 4, np.random.default_rng(3))
    assert separated_classes(logits, labels).size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = fit_calibrator("vs", logits, labels, reg=0.0)
    np.testing.assert_allclose(fitted.weight, [0.5574666342556505, 0.40283718759525544, 0.3271480300979947,
                                               0.7181981605275043], atol=1e-6)
    np.testing.assert_allclose(fitted.bias, [0.20269044291844018, 0.4712700034330366, 0.37324011455720996,
                                             -1.0472005609086872], atol=1e-6)


def test_the_default_penalty_fades_on_a_large_validation_set():
    rng = np.random.default_rng(6)
    val, val_labels = accurate(20000, 10, rng, wrong=0.3)
    test, test_labels = accurate(20000, 10, rng, wrong=0.3)
    scores = [mean_nll(fit_calibrator("vs", val, val_labels, **hp).transform(test), test_labels)
              for hp in ({}, {"reg": 0.0})]
    assert abs(scores[0] - scores[1]) < 1e-5 * scores[1]  # 1.3e-6; a penalty of 1e-3 on the mean NLL: 4.6e-5


def test_separated_classes_equals_the_per_class_check():
    rng = np.random.default_rng(7)
    n, k = 3 * CHUNK_ROWS + 17, 6  # several row blocks
    logits, labels = rng.normal(size=(n, k)), rng.integers(0, k - 1, n)  # class k - 1 absent
    logits[labels == 1, 1] += 10.0  # above every other row
    logits[labels == 3, 3] -= 10.0  # below every other row
    expected = [c for c in range(k) if not (labels == c).any()
                or logits[labels == c, c].min() > logits[labels != c, c].max()
                or logits[labels == c, c].max() < logits[labels != c, c].min()]
    assert expected == [1, 3, 5] and separated_classes(logits, labels).tolist() == expected


@pytest.mark.parametrize("value", [-0.1, math.inf, math.nan, "big", True])
def test_a_bad_reg_is_a_one_line_config_error(value):
    for make in (lambda: create_calibrator("vs", reg=value), lambda: VectorScaling(reg=value)):
        with pytest.raises(ConfigError, match=r"vs\.reg") as caught:
            make()
        assert "\n" not in str(caught.value)
