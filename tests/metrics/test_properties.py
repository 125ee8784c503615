"""Property tests: permutation invariance, logits == softmax probs, consistency, aece coverage."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calbench.metrics import METRIC_KEYS, compute_metrics

from .conftest import softmax

FAST = settings(max_examples=12, deadline=None)


@st.composite
def predictions(draw):
    n = draw(st.integers(5, 300))
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * draw(st.floats(0.1, 5.0))
    if draw(st.booleans()):  # ties in confidence across samples
        logits = np.round(logits, 1)
    return logits, rng.integers(0, k, n), rng


@FAST
@given(predictions())
def test_every_metric_is_permutation_invariant(data):
    logits, labels, rng = data
    perm = rng.permutation(len(labels))
    a = compute_metrics(labels, logits=logits)
    b = compute_metrics(labels[perm], logits=logits[perm])
    assert set(a) == set(METRIC_KEYS)
    for k in METRIC_KEYS:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


@FAST
@given(predictions())
def test_logits_and_softmax_probs_agree(data):
    logits, labels, _ = data
    a = compute_metrics(labels, logits=logits)
    b = compute_metrics(labels, probs=softmax(logits))
    for k in METRIC_KEYS:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


def test_torch_and_numpy_agree():
    import torch

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(200, 4)), rng.integers(0, 4, 200)
    a = compute_metrics(labels, logits=logits)
    b = compute_metrics(torch.tensor(labels), logits=torch.tensor(logits))
    assert a == b


@FAST
@given(st.integers(1, 400), st.integers(1, 20), st.integers(0, 2 ** 31))
def test_aece_counts_every_sample_once(n, bins, seed):
    # all predictions wrong: every group's gap is its sum of r, so aece = mean r iff each sample counts once
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    probs = np.stack([conf, 1 - conf], 1)
    m = compute_metrics(np.ones(n, dtype=int), probs=probs, bins=bins)
    assert m["aece"] == pytest.approx(conf.mean(), abs=1e-12)
    assert m["ece"] == pytest.approx(conf.mean(), abs=1e-12)


def test_ece_of_perfectly_calibrated_data_goes_to_zero():
    rng = np.random.default_rng(0)
    eces = []
    for n in (1_000, 10_000, 300_000):
        conf = rng.uniform(0.5, 1.0, n)
        labels = (rng.random(n) >= conf).astype(int)  # label 0 (the argmax) with probability conf
        m = compute_metrics(labels, probs=np.stack([conf, 1 - conf], 1), keys=("ece", "aece"))
        eces.append(m["ece"])
    assert eces[0] > eces[1] > eces[2]
    assert eces[2] < 0.005
