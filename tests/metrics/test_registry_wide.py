"""Tests over every registered metric (parametrised by METRICS.names(), no hand-kept list)."""

import numpy as np
import pytest

from calbench.metrics import METRICS, bootstrap_metrics, compute_metrics
from calbench.metrics.bootstrap import Resampler, bootstrap_indices, counts_from_indices
from calbench.metrics.inputs import prepare

from .conftest import softmax, synth
from .references import HAND_CASES, REFERENCES, context

KEYS = METRICS.names()


def _tied(n=600, k=6, seed=0):
    logits, labels = synth(n, k, seed)
    return np.round(logits, 1), labels  # many tied confidences, some across group boundaries


def test_every_metric_has_a_hand_case_and_a_reference():
    missing = [k for k in KEYS if k not in HAND_CASES or k not in REFERENCES]
    assert not missing, f"metrics without a hand case or reference in tests/metrics/references.py: {missing}"
    assert set(HAND_CASES) <= set(KEYS) and set(REFERENCES) <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_hand_cases(key):
    for case in HAND_CASES.get(key, []):
        labels, scores, want, kwargs = case()
        assert compute_metrics(labels, **scores, keys=(key,), **kwargs)[key] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("seed,k", [(0, 10), (1, 4)])
def test_reference_implementation(key, seed, k):
    if key not in REFERENCES:
        pytest.fail(f"no reference for {key}")
    fn, tol = REFERENCES[key]
    logits, labels = synth(2000, k, seed)
    probs = softmax(logits)
    ours = compute_metrics(labels, probs=probs, keys=(key,), **context(k))[key]
    assert abs(ours - fn(labels, probs)) <= tol


@pytest.mark.parametrize("key", KEYS)
def test_permutation_invariant(key):
    logits, labels = _tied()
    perm = np.random.default_rng(1).permutation(len(labels))
    a = compute_metrics(labels, logits=logits, keys=(key,), **context(6))[key]
    b = compute_metrics(labels[perm], logits=logits[perm], keys=(key,), **context(6))[key]
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("kind", ["logits", "probs", "probs32"])
def test_each_key_alone_equals_the_full_set(key, kind):
    logits, labels = _tied()
    scores = {"logits": logits, "probs": softmax(logits), "probs32": softmax(logits).astype(np.float32)}[kind]
    arg = {"logits" if kind == "logits" else "probs": scores}
    alone = compute_metrics(labels, **arg, keys=key, **context(6))
    assert list(alone) == [key]
    every = compute_metrics(labels, **arg, keys=KEYS, **context(6))
    assert alone[key] == pytest.approx(every[key], abs=1e-12)


@pytest.mark.parametrize("key", KEYS)
def test_weights_path_equals_the_explicit_resample(key):
    """The bootstrap calls the metric with count weights; that equals recomputing it on each
    explicit resample (rows with repeats and with samples drawn zero times), and the point estimate
    equals compute_metrics exactly."""
    logits, labels = _tied(400, 5, seed=2)
    rs = Resampler(prepare(labels, logits=logits), 15, (key,), **context(5))
    assert rs.point == compute_metrics(labels, logits=logits, keys=(key,), **context(5))
    idx = bootstrap_indices(400, 6, seed=3)
    W = counts_from_indices(rs.inv[idx], 400)
    np.testing.assert_allclose(rs.stats(W)[key], rs.explicit(key, W), rtol=0, atol=1e-9)
    for j in (0, 5):
        want = compute_metrics(labels[idx[j]], logits=logits[idx[j]], keys=(key,), **context(5))[key]
        assert rs.stats(W[j:j + 1])[key][0] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("key", KEYS)
def test_bootstrap_of_one_key_alone(key):
    logits, labels = _tied(300, 4, seed=4)
    res = bootstrap_metrics(labels, logits=logits, B=8, seed=0, keys=(key,), **context(4))
    assert list(res["samples"]) == [key] and res["samples"][key].shape == (8,)
    lo, hi = res["ci"][key]
    assert lo <= hi


@pytest.mark.parametrize("key", KEYS)
def test_spec_is_complete(key):
    spec = METRICS.get(key)
    assert spec.key == key and spec.name and spec.header and spec.definition
    assert spec.resample in ("weights", "explicit") and spec.needs
