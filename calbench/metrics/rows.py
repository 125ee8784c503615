"""One chunked float64 pass over (n, K) scores producing the per-sample quantities every metric needs.

Only per-sample vectors (n,) and the (K, M) classwise bin sums are kept, so 10^7 rows never need
an (n, K) float64 copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calbench.metrics.binning import bin_edges, bin_index
from calbench.metrics.inputs import Prepared

TINY = np.finfo(np.float64).tiny  # -log of a probability of exactly 0 is clipped to -log(tiny) ~ 708


@dataclass
class Rows:
    """Per-sample confidence r_i, prediction, correctness c_i, -log p_{i,y_i}, Brier term; and
    cece_sums[k, b] = sum over samples with p_ik in bin b of (p_ik - 1[y_i = k])."""

    labels: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    correct: np.ndarray  # float64 0/1
    nll: np.ndarray
    brier: np.ndarray
    cece_sums: np.ndarray | None
    num_classes: int
    bins: int

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])


def probs_block(prep: Prepared, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 probabilities of rows [start, stop) and -log p_{i,y_i} (log_softmax for logits)."""
    y = prep.labels[start:stop]
    ar = np.arange(stop - start)
    x = np.array(prep.scores[start:stop], dtype=np.float64)  # a fresh float64 block we may overwrite
    if prep.kind == "logits":
        x -= x.max(axis=1, keepdims=True)
        zy = x[ar, y].copy()
        np.exp(x, out=x)
        s = x.sum(axis=1)
        x /= s[:, None]
        nll = np.log(s) - zy
    else:
        nll = -np.log(np.maximum(x[ar, y], TINY))
    return x, nll


def summarise(prep: Prepared, bins: int = 15, classwise: bool = True) -> Rows:
    """Run the chunked pass (see module docstring)."""
    n, k = prep.n, prep.num_classes
    pred = np.empty(n, dtype=np.int64)
    conf = np.empty(n)
    nll = np.empty(n)
    brier = np.empty(n)
    sums = np.zeros(k * bins) if classwise else None
    class_total = np.zeros(k)
    first_edge = bin_edges(bins)[1]
    for start, stop in prep.chunks():
        p, nll[start:stop] = probs_block(prep, start, stop)
        ar = np.arange(stop - start)
        y = prep.labels[start:stop]
        pred[start:stop] = p.argmax(axis=1)
        conf[start:stop] = p[ar, pred[start:stop]]
        if classwise:  # only the few entries above the first bin need a bin index
            r, c = np.nonzero(p > first_edge)
            keys = c * bins + bin_index(p[r, c], bins)
        p[ar, y] -= 1.0  # p now holds p_ik - 1[y_i = k]
        brier[start:stop] = np.einsum("ij,ij->i", p, p)
        if classwise:
            sums += np.bincount(keys, weights=p[r, c], minlength=k * bins)
            class_total += p.sum(axis=0)
    correct = (pred == prep.labels).astype(np.float64)
    if classwise:  # the first bin's sum is the class total minus the other bins
        sums = sums.reshape(k, bins)
        sums[:, 0] = class_total - sums[:, 1:].sum(axis=1)
    return Rows(prep.labels, pred, conf, correct, nll, brier, sums, k, bins)
