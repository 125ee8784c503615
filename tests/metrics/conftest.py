"""Shared synthetic predictions for the metrics tests."""

import numpy as np
import pytest


def synth(n: int, k: int, seed: int = 0, scale: float = 3.0):
    """Logits whose softmax is over-confident, labels drawn from a tempered softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    z = logits / 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def preds():
    return synth(3000, 10)
