"""Registry-wide checks beyond the contract test (test_registry.py): every registered calibrator fits
on validation rows only, gives a valid probability matrix on awkward inputs (huge logits, ties, an
empty validation split), keeps the arg-max when it says so on several shapes, and names the key of a
bad hyper-parameter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from calbench.errors import ConfigError
from calbench.metrics import compute_metrics
from calbench.posthoc import POSTHOC, calibrated_scores, calibrator_hparams, create_calibrator, fit_calibrator


def predictions(n, k, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.0
    return scale * z, labels


def as_probabilities(calibrator, logits):
    out = calibrator.transform(logits)
    return out if calibrator.output == "probs" else softmax(out, axis=1)


def assert_probability_matrix(probs, shape):
    assert probs.shape == shape and np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("name", POSTHOC.names())
def test_fit_sees_validation_rows_only(name):
    """Val and test rows live in one array; perturbing the test rows (before and after the fit) leaves
    the fitted state unchanged, and transforming does not change it either."""
    logits, labels = predictions(1200, 5, seed=0)
    val = slice(0, 800)
    before = fit_calibrator(name, logits[val], labels[val])
    state = before.state()
    rng = np.random.default_rng(1)
    logits[800:] += rng.normal(scale=5.0, size=logits[800:].shape)
    labels[800:] = rng.integers(0, 5, 400)
    before.transform(logits[800:])
    assert before.state() == state
    assert fit_calibrator(name, logits[val], labels[val]).state() == state


@pytest.mark.parametrize("name", POSTHOC.names())
def test_awkward_inputs_give_probability_matrices_every_metric_takes(name):
    logits, labels = predictions(500, 4, seed=2)
    calibrator = fit_calibrator(name, logits, labels)
    awkward = np.concatenate([logits[:50] * 200.0, np.zeros((5, 4)), -logits[50:80], logits[80:100] + 1e3])
    assert_probability_matrix(as_probabilities(calibrator, awkward), awkward.shape)
    scores, kind = calibrated_scores(calibrator, awkward)
    metrics = compute_metrics(np.arange(len(awkward)) % 4, **{kind: scores})
    assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", POSTHOC.names())
def test_empty_validation_split_still_gives_probabilities(name):
    calibrator = fit_calibrator(name, np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    test, _ = predictions(20, 3, seed=3)
    assert_probability_matrix(as_probabilities(calibrator, test), test.shape)


@pytest.mark.parametrize("name", [n for n in POSTHOC.names() if POSTHOC.get(n).preserves_argmax])
@pytest.mark.parametrize("n, k, scale", [(300, 2, 1.0), (2000, 10, 4.0), (1000, 100, 8.0)])
def test_declared_argmax_preservation_holds(name, n, k, scale):
    logits, labels = predictions(n, k, seed=4, scale=scale)
    test, _ = predictions(n, k, seed=5, scale=scale)
    out = fit_calibrator(name, logits, labels).transform(test)
    np.testing.assert_array_equal(out.argmax(1), test.argmax(1))


@pytest.mark.parametrize("name", POSTHOC.names())
def test_a_value_of_the_wrong_kind_names_the_key(name):
    for key, default in calibrator_hparams(name).items():
        wrong = 1.5 if isinstance(default, str) else "not-a-" + type(default).__name__
        with pytest.raises(ConfigError, match=rf"{name}\.{key}: expected"):
            create_calibrator(name, **{key: wrong})
