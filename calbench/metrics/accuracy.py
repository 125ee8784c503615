"""Accuracy (docs/metrics.md): acc = mean_i c_i, c_i = 1[argmax_k p_ik = y_i]."""

from __future__ import annotations

import numpy as np

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, weighted


@metric("acc", name="accuracy", higher_is_better=True, percent=True, header="Acc",
        definition="mean of 1(argmax_k p_ik = y_i)", needs=("correct",))
def accuracy(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        return stats.totals["correct"] / stats.n
    return weights @ stats.sample("correct") / weighted(stats, weights)["total"]
