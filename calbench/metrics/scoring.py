"""Proper scores (docs/metrics.md): nll and the multiclass Brier score, float64 sums from the pass."""

from __future__ import annotations

import numpy as np

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, weighted


def _mean(stats: SampleStats, weights, name: str):
    if weights is None:
        return stats.totals[name] / stats.n
    return weights @ stats.sample(name) / weighted(stats, weights)["total"]


@metric("nll", name="negative log-likelihood", higher_is_better=False, percent=False, header="NLL",
        definition="mean -log p_{i,y_i} (natural log, log_softmax of logits)", needs=("nll",), unit="nats")
def nll(stats: SampleStats, weights: np.ndarray | None):
    """Natural log; from logits via log_softmax (never the log of a rounded probability); a
    probability of exactly 0 is clipped to the smallest normal float64 (-log ~ 708)."""
    return _mean(stats, weights, "nll")


@metric("brier", name="Brier score", higher_is_better=False, percent=False, header="Brier",
        definition="mean_i sum_k (p_ik - 1(y_i = k))^2", needs=("brier",))
def brier(stats: SampleStats, weights: np.ndarray | None):
    """Brier (1950), multiclass form: summed over classes, not divided by K."""
    return _mean(stats, weights, "brier")
