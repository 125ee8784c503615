"""Class-wise calibration errors of Nixon et al., "Measuring Calibration in Deep Learning" (CVPR
Workshops 2019): tace (thresholded adaptive calibration error) and sce (static calibration error).
Conventions: docs/metrics.md.

SCE = (1/K) sum_k sum_b (n_bk / N) |acc(b, k) - conf(b, k)| over M equal-width bins of p_ik for all
N samples: exactly calbench's `cece` (Kull et al. 2019), registered under Nixon et al.'s name.

TACE = (1/K) sum_k sum_r (n_rk / N_k) |acc(r, k) - conf(r, k)|: for class k only the N_k entries
with p_ik > 1e-3 count, cut into M equal-mass ranges. Weights n_rk / N_k and a class without
entries adding 0 follow the authors' code (uncertainty_metrics' GeneralCalibrationError); the
ranges follow calbench's equal-mass rule (ranks sorted by p, ties by 1[y = k]; sizes differ by at
most one) instead of their quantile edges, so that ties never change the value.
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.calibration import cece
from calbench.metrics.equal_mass import cumulative, group_ends, group_sums
from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached

TACE_THRESHOLD = 1e-3

metric("sce", name="static calibration error", higher_is_better=False, percent=True, header="SCE",
       definition="Nixon et al.'s SCE: mean over classes of the equal-width ECE of p_ik (= cece)",
       needs=("classwise",), default=False)(cece)


def _class_orders(P: np.ndarray, labels: np.ndarray, threshold: float) -> list:
    """Per class: (sample indices with p_ik > threshold sorted by (p, target), p, target)."""
    out = []
    for k in range(P.shape[1]):
        idx = np.flatnonzero(P[:, k] > threshold)
        p, t = P[idx, k], (labels[idx] == k).astype(np.float64)
        order = np.lexsort((t, p))
        out.append((idx[order], p[order], t[order]))
    return out


def tace_of(orders: list, W: np.ndarray | None, bins: int) -> np.ndarray:
    """TACE for each row of the counts W (None: every sample once), from _class_orders."""
    b = 1 if W is None else W.shape[0]
    total = np.zeros(b)
    for idx, p, t in orders:
        Wk = np.ones((1, idx.size)) if W is None else W[:, idx]
        cums = cumulative(Wk, p, t)
        n_k = cums[0][:, -1] if idx.size else np.zeros(b)
        fc, fr = group_sums(cums, p, t, group_ends(n_k, bins))
        total += np.abs(fc - fr).sum(axis=1) / np.maximum(n_k, 1.0)
    return total / len(orders)


@metric("tace", name="thresholded adaptive calibration error", higher_is_better=False, percent=True,
        header="TACE", definition="per class, entries p_ik > 1e-3 in M equal-mass ranges; mean over classes",
        needs=("probs",), default=False)
def tace(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        return float(tace_of(_class_orders(stats.probs, stats.labels, TACE_THRESHOLD), None, stats.bins)[0])
    orders = cached(stats, "tace", lambda: _class_orders(stats.sample("probs"), stats.sample("labels"),
                                                         TACE_THRESHOLD))
    return tace_of(orders, weights, stats.bins)
