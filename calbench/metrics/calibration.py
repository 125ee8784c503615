"""Binned calibration errors of METRICS.md: ece, mce (equal-width, (lo, hi] bins), aece (equal-mass
groups counting every sample once), cece (classwise ECE over all N samples per class)."""

from __future__ import annotations

import numpy as np

from calbench.metrics.binning import bin_index, equal_mass_groups


def binned_sums(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: sample count, sum of c_i, sum of r_i (float64)."""
    b = bin_index(conf, bins)
    count = np.bincount(b, minlength=bins).astype(np.float64)
    sum_c = np.bincount(b, weights=correct, minlength=bins)
    sum_r = np.bincount(b, weights=conf, minlength=bins)
    return count, sum_c, sum_r


def ece_from_sums(count, sum_c, sum_r, total=None) -> np.ndarray:
    """sum_b (n_b / N) |mean c - mean r| = sum_b |sum_c - sum_r| / N; works on (..., M) arrays."""
    total = count.sum(axis=-1) if total is None else total
    return np.abs(sum_c - sum_r).sum(axis=-1) / total


def mce_from_sums(count, sum_c, sum_r) -> np.ndarray:
    """max over non-empty bins of |mean c - mean r|; works on (..., M) arrays."""
    gap = np.abs(sum_c - sum_r) / np.maximum(count, 1.0)
    return np.where(count > 0, gap, 0.0).max(axis=-1)


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    return float(ece_from_sums(*binned_sums(conf, correct, bins)))


def mce(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    return float(mce_from_sums(*binned_sums(conf, correct, bins)))


def adaptive_order(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Sort by r, ties broken by c: the groups then depend only on the multiset of (r_i, c_i), which
    makes aece permutation invariant even when confidences tie across a group boundary."""
    return np.lexsort((correct, conf))


def aece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Adaptive ECE: M contiguous groups of the sorted samples, sizes differing by at most one."""
    order = adaptive_order(conf, correct)
    cc = np.concatenate([[0.0], np.cumsum(correct[order])])
    cr = np.concatenate([[0.0], np.cumsum(conf[order])])
    edges = equal_mass_groups(conf.shape[0], bins)
    gap = np.abs(np.diff(cc[edges]) - np.diff(cr[edges]))
    return float(gap.sum() / conf.shape[0])


def cece_from_sums(sums: np.ndarray, n) -> np.ndarray:
    """Classwise ECE from sums[..., k, b] of (p_ik - 1[y_i = k]) over bin b: mean_k sum_b |.| / N."""
    return np.abs(sums).sum(axis=-1).mean(axis=-1) / n
