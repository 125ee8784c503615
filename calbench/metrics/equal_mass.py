"""Equal-mass group sums of resampled multisets (shared by ece-sweep and tace; no metric here).

The samples are sorted (by value, ties by target) and W holds per-sample counts. A resample's
multiset puts the w_i copies of sample i next to each other in that order, so its contiguous
group ending at (cumulative) position p holds every sample before the first one whose cumulative
count reaches p, and part of that one. The sums of each group follow from cumulative sums and one
search per group end, with the straddling sample split (docs/metrics.md, "The equal-mass rule").
"""

from __future__ import annotations

import numpy as np


def cumulative(W: np.ndarray, values: np.ndarray, targets: np.ndarray):
    """Cumulative counts, target sums and value sums along each row of the (b, n) counts."""
    return np.cumsum(W, axis=1), np.cumsum(W * targets, axis=1), np.cumsum(W * values, axis=1)


def group_sums(cums, values: np.ndarray, targets: np.ndarray, ends: np.ndarray):
    """(sum of targets, sum of values) of each group, (b, G) each, for group end positions ends (b, G)
    (cumulative counts, non-decreasing, the last one at most the row's total)."""
    cw, cc, cr = cums
    b, n = cw.shape
    if n == 0:
        return np.zeros(ends.shape), np.zeros(ends.shape)
    off = np.arange(b)[:, None] * (cw[:, -1].max() + 1.0)
    j = np.searchsorted((cw + off).ravel(), (ends + off).ravel(), side="left").reshape(ends.shape)
    j -= (np.arange(b) * n)[:, None]
    np.clip(j, 0, n - 1, out=j)
    rows = np.arange(b)[:, None]
    excess = cw[rows, j] - ends
    fc = np.diff(cc[rows, j] - excess * targets[j], axis=1, prepend=0.0)
    fr = np.diff(cr[rows, j] - excess * values[j], axis=1, prepend=0.0)
    return fc, fr


def group_ends(totals: np.ndarray, groups: int) -> np.ndarray:
    """(b, G) cumulative ends of `groups` groups whose integer sizes differ by at most one, the first
    total % G one larger (binning.equal_mass_groups for each row's total)."""
    totals = np.rint(totals).astype(np.int64)
    base, extra = totals // groups, totals % groups
    g = np.arange(1, groups + 1)[None, :]
    return (base[:, None] * g + np.minimum(g, extra[:, None])).astype(np.float64)
