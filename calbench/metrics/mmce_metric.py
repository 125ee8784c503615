"""MMCE as a metric: Kumar, Sarawagi & Jain, "Trainable Calibration Measures for Neural Networks
from Kernel Mean Embeddings" (ICML 2018, eq. 1), top-label (docs/metrics.md).

MMCE^2 = sum_{i,j} (c_i - r_i)(c_j - r_j) k(r_i, r_j) / N^2 with the Laplacian kernel
k(r, r') = exp(-|r - r'| / 0.4); the metric is sqrt(max(MMCE^2, 0)).

The double sum is O(N^2) as written, but the Laplacian kernel in one dimension factors along the
sorted confidences: for r_j <= r_i, k = e^{-r_i/w} e^{r_j/w}, so with a_i = c_i - r_i
  MMCE^2 N^2 = sum_i a_i e^{-r_i/w} P_i + sum_i a_i e^{r_i/w} Q_i,
  P_i = sum_{j <= i} a_j e^{r_j/w},  Q_i = sum_{j > i} a_j e^{-r_j/w}
(sorted order; tied r give k = 1 on either side). Every factor lies in [e^{-2.5}, e^{2.5}] for r in
[0, 1], so the sums are well conditioned. Bootstrap counts enter as a_i -> w_i a_i and N -> sum w,
the exact weighted form sum_ij w_i w_j a_i a_j k_ij / (sum w)^2 of the explicit resample. The C walk
takes one running sum: the pairs j > i are the pairs j < i seen from the other side, so
MMCE^2 N^2 = 2 sum_i a_i e^{-r_i/w} P_i - sum_i a_i^2 (P inclusive of i).
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.registry import metric
from calbench.metrics.sorted_rows import mmce_rows, sorted_inputs
from calbench.metrics.stats import SampleStats, unpack, weighted

MMCE_WIDTH = 0.4


def mmce_squared_sum(r: np.ndarray, A: np.ndarray, width: float = MMCE_WIDTH) -> np.ndarray:
    """sum_ij A_i A_j exp(-|r_i - r_j| / width) for each row of A (b, n); r sorted ascending."""
    up, down = np.exp(r / width), np.exp(-r / width)
    P = np.cumsum(A * up, axis=1)
    Q = (A * down).sum(axis=1, keepdims=True) - np.cumsum(A * down, axis=1)
    return (A * down * P).sum(axis=1) + (A * up * Q).sum(axis=1)


@metric("mmce", name="maximum mean calibration error", higher_is_better=False, percent=True, header="MMCE",
        definition="sqrt(sum_ij (c_i-r_i)(c_j-r_j) exp(-|r_i-r_j|/0.4)) / N (Kumar et al. 2018)",
        needs=("conf",), default=False, binning="kernel")
def mmce(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        r, c = unpack(np.sort(stats.key))
        return float(np.sqrt(max(mmce_squared_sum(r, (c - r)[None])[0], 0.0)) / stats.n)
    squared = mmce_rows(stats, weights, MMCE_WIDTH)  # the C walk (sorted_rows.py), when built
    if squared is None:
        W, r, c = sorted_inputs(stats, weights)
        squared = mmce_squared_sum(r, W * (c - r))
    return np.sqrt(np.maximum(squared, 0.0)) / weighted(stats, weights)["total"]
