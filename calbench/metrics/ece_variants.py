"""Top-label ECE variants (docs/metrics.md): ece-l2 (RMS calibration error), ece-debiased (Kumar,
Liang & Ma, NeurIPS 2019) and ece-sweep (Roelofs et al., AISTATS 2022).

ece-l2 and ece-debiased use the equal-width (lo, hi] bins of `ece`, so the three differ only in the
estimator. Kumar et al.'s `uncertainty-calibration` package bins by equal mass (and its
get_calibration_error defaults to the class-wise 'marginal' mode): tests/metrics/test_ece_variants.py
checks calbench against it with the same bins and shows the conversion.
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.binning import equal_mass_groups
from calbench.metrics.calibration import _bin_sums
from calbench.metrics.equal_mass import cumulative, group_ends, group_sums
from calbench.metrics.registry import metric
from calbench.metrics.sorted_rows import MONOTONE_TOL, sorted_inputs, sweep_rows
from calbench.metrics.stats import SampleStats, sorted_key, unpack


def squared_l2_from_sums(count, sum_c, sum_r, total) -> np.ndarray:
    """sum_b (n_b / N) (acc_b - conf_b)^2 = sum_b (sum_c - sum_r)^2 / (n_b N); (..., M) arrays."""
    return ((sum_c - sum_r) ** 2 / np.maximum(count, 1e-300)).sum(axis=-1) / total


def debiased_squared_from_sums(count, sum_c, sum_r, total) -> np.ndarray:
    """Kumar et al. (2019, Sec. 5): sum over bins with n_b >= 2 of (n_b / N) [(acc_b - conf_b)^2
    - acc_b (1 - acc_b) / (n_b - 1)]; a bin with fewer than 2 samples adds 0 (as their package)."""
    big = count >= 2
    n_b = np.where(big, count, 2.0)
    acc = sum_c / n_b
    term = (sum_c - sum_r) ** 2 / n_b - sum_c * (1.0 - acc) / (n_b - 1.0)
    return np.where(big, term, 0.0).sum(axis=-1) / total


def _total(count, total):
    return count.sum(axis=-1) if total is None else total


@metric("ece-l2", name="RMS calibration error", higher_is_better=False, percent=True, header="ECE-L2",
        definition="ece bins; sqrt(sum_b (n_b/N) (acc_b - conf_b)^2)", needs=("binned",),
        default=False)
def ece_l2(stats: SampleStats, weights: np.ndarray | None):
    """The L2 calibration error of the binned model (torchmetrics' norm='l2', Nguyen & O'Connor 2015)."""
    count, sum_c, sum_r, total = _bin_sums(stats, weights)
    return np.sqrt(squared_l2_from_sums(count, sum_c, sum_r, _total(count, total)))


@metric("ece-debiased", name="debiased L2 ECE", higher_is_better=False, percent=True, header="dECE",
        definition="ece bins; sqrt(max(0, sum_b (n_b/N) [(acc_b - conf_b)^2 - acc_b(1-acc_b)/(n_b-1)]))",
        needs=("binned",))
def ece_debiased(stats: SampleStats, weights: np.ndarray | None):
    """Kumar, Liang & Ma, "Verified Uncertainty Calibration" (NeurIPS 2019): the plug-in squared
    error of each bin minus the variance of its accuracy estimate, clipped at 0 before the square
    root, as their get_calibration_error(..., p=2, debias=True) returns."""
    count, sum_c, sum_r, total = _bin_sums(stats, weights)
    return np.sqrt(np.maximum(debiased_squared_from_sums(count, sum_c, sum_r, _total(count, total)), 0.0))


def _monotone(fc: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per row: the group accuracies are non-decreasing in confidence (b <= n: no group is empty)."""
    return np.all(np.diff(fc / sizes, axis=1) >= -MONOTONE_TOL, axis=1)


def sweep(totals: np.ndarray, sums_at) -> np.ndarray:
    """Roelofs et al. (2022, eq. 6): the largest b such that every b' <= b equal-mass groups have
    non-decreasing accuracies; returns the L1 ECE at that b per row. `totals` (rows,) is the size
    of each row's multiset (n for the point estimate and a bootstrap row, less for a jackknife row),
    which bounds its b (no group may be empty); sums_at(b, rows) gives the (fc, fr, sizes)
    (rows, b) arrays of b groups."""
    fc, fr, sizes = sums_at(1, None)
    best = np.abs(fc - fr).sum(axis=1)
    alive = np.flatnonzero(totals >= 2)
    for b in range(2, int(totals.max(initial=0)) + 1):
        if alive.size == 0:
            break
        fc, fr, sizes = sums_at(b, alive)
        ok = _monotone(fc, sizes)
        alive = alive[ok]
        best[alive] = np.abs(fc[ok] - fr[ok]).sum(axis=1)
        alive = alive[totals[alive] > b]
    return best / np.maximum(totals, 1.0)


def _sweep_point(stats: SampleStats) -> float:
    r, c = unpack(sorted_key(stats))  # order by (r, then c): the equal-mass rule of aece
    n = stats.n
    if np.all(c == c[0]):  # every b is monotone: b = n, each sample its own group
        return float(np.abs(c - r).sum() / n)
    cc, cr = np.concatenate([[0.0], np.cumsum(c)]), np.concatenate([[0.0], np.cumsum(r)])

    def sums_at(b, rows):
        ends = equal_mass_groups(n, b)
        return np.diff(cc[ends])[None], np.diff(cr[ends])[None], np.diff(ends)[None].astype(np.float64)

    return float(sweep(np.array([float(n)]), sums_at)[0])


def _sweep_weighted(stats: SampleStats, W: np.ndarray) -> np.ndarray:
    """ECE_sweep of each count row of W (any totals): the same sweep over the resampled multisets,
    their equal-mass groups cut with cumulative counts (equal_mass.py). A row whose drawn samples
    all have the same correctness is monotone for every b, so its value is the b = total one,
    sum_i w_i |c_i - r_i| / total, computed directly (as _sweep_point does)."""
    W, r, c = sorted_inputs(stats, W)
    totals, hits = W.sum(axis=1), W @ c
    uniform = (hits == 0) | (hits == totals)
    out = (W @ np.abs(c - r)) / np.maximum(totals, 1.0)
    rows = np.flatnonzero(~uniform)
    if rows.size:
        Wr = W[rows]
        cums = cumulative(Wr, r, c)

        def sums_at(b, alive):
            ends = group_ends(totals[rows] if alive is None else totals[rows][alive], b)
            fc, fr = group_sums(cums, r, c, ends, alive)
            return fc, fr, np.diff(ends, axis=1, prepend=0.0)

        out[rows] = sweep(totals[rows], sums_at)
    return out


@metric("ece-sweep", name="monotonic sweep ECE", higher_is_better=False, percent=True, header="ECE-sweep",
        definition="equal-mass aece groups; the largest b keeping group accuracies monotone (Roelofs 2022)",
        needs=("conf",), default=False, binning="equal-mass", scope="top-label")
def ece_sweep(stats: SampleStats, weights: np.ndarray | None):
    """ECE_sweep of Roelofs, Cain, Shlens & Mozer, "Mitigating Bias in Calibration Error Estimation"
    (AISTATS 2022): equal-mass bins (calbench's rank groups, ties by c), b raised from 1 while the
    per-bin accuracies stay non-decreasing in confidence; the L1 ECE (p = 1) at the last such b."""
    if weights is None:
        return _sweep_point(stats)
    fast = sweep_rows(stats, weights)  # the C walk (sorted_rows.py), when built
    return _sweep_weighted(stats, weights) if fast is None else fast
