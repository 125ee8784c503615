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
    """Cumulative counts, target sums and value sums along each row of the (b, n) counts, and the
    counts of every row laid end to end (row j shifted by j (max total + 1), so the whole is sorted)
    with those shifts: one search then finds group ends in any set of rows."""
    cw = np.cumsum(W, axis=1)
    shift = np.arange(W.shape[0]) * (cw[:, -1].max(initial=0.0) + 1.0) if W.shape[1] else np.zeros(W.shape[0])
    flat = (cw + shift[:, None]).ravel() if W.shape[1] else np.zeros(0)
    return cw, np.cumsum(W * targets, axis=1), np.cumsum(W * values, axis=1), flat, shift


def group_sums(cums, values: np.ndarray, targets: np.ndarray, ends: np.ndarray, rows=None):
    """(sum of targets, sum of values) of each group, (len(rows), G) each, for group end positions
    ends (len(rows), G) (cumulative counts, non-decreasing, the last one at most the row's total)
    of the rows `rows` of cums (None: every row), without copying those rows."""
    cw, cc, cr, flat, shift = cums
    n = cw.shape[1]
    rows = np.arange(cw.shape[0]) if rows is None else np.asarray(rows)
    if n == 0:
        return np.zeros(ends.shape), np.zeros(ends.shape)
    j = np.searchsorted(flat, (ends + shift[rows][:, None]).ravel(), side="left").reshape(ends.shape)
    j -= (rows * n)[:, None]
    np.clip(j, 0, n - 1, out=j)
    at = rows[:, None]
    excess = cw[at, j] - ends
    fc = np.diff(cc[at, j] - excess * targets[j], axis=1, prepend=0.0)
    fr = np.diff(cr[at, j] - excess * values[j], axis=1, prepend=0.0)
    return fc, fr


def group_ends(totals: np.ndarray, groups: int) -> np.ndarray:
    """(b, G) cumulative ends of `groups` groups whose integer sizes differ by at most one, the first
    total % G one larger (binning.equal_mass_groups for each row's total)."""
    totals = np.rint(totals).astype(np.int64)
    base, extra = totals // groups, totals % groups
    g = np.arange(1, groups + 1)[None, :]
    return (base[:, None] * g + np.minimum(g, extra[:, None])).astype(np.float64)
