"""The C kernels (sorted_rows.c) of the metrics that read the samples in confidence order, under the
bootstrap: one walk per count row carries the running sums that the NumPy paths build as (b, n)
cumulative arrays (ece's bins, aece, ks, the selective metrics, mmce, ece-sweep). No metric here.
Beside them: the count matrix of resampled indices, cece's per-row label counts and high-bin sums,
the in-place sort of the bootstrap's (n, K) probabilities, and key_walk, the point estimates of
aece / ks / the selective metrics in one walk over the sorted packed keys.

Each wrapper takes the count matrix with its columns in the adaptive order (sorted_inputs) and
returns None where the kernel is not built (no compiler, CALBENCH_NATIVE=0): the caller then takes
its NumPy path, which gives the same values to rounding (tests/metrics/test_sorted_rows.py runs
both against the explicit resample). The per-weights memo (stats.weighted) holds each result, so
the metrics that share a walk (ece / mce / ece-l2 / ece-debiased / aece / ks, and the selective
family) pay for it once per bootstrap block.
"""

from __future__ import annotations

import ctypes

import numpy as np

from calbench import native
from calbench.metrics.binning import bin_index
from calbench.metrics.stats import SampleStats, cached, sorted_key, sorted_samples, weighted

MONOTONE_TOL = 1e-12  # ece-sweep: accuracies equal up to rounding count as non-decreasing
RISK_PERCENTS = (80, 90, 95)  # the coverages of selective.py's risk@cov<percent>, one walk for all
COVERAGES = tuple(p / 100 for p in RISK_PERCENTS)


def _kernel() -> ctypes.CDLL | None:
    lib = native.load("sorted_rows", package="metrics")
    if lib is not None and not hasattr(lib, "_calbench_typed"):
        p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
        lib.calbench_counts.argtypes = [i64, i64, p, p, p]
        lib.calbench_counts.restype = ctypes.c_int
        lib.calbench_conf_rows.argtypes = [i64, i64, p, p, p, p, i64, p, i64, p, p, p, p]
        lib.calbench_conf_rows.restype = None
        lib.calbench_selective_rows.argtypes = [i64, i64, p, p, p, p, p, i64, p, p, p, p, p, p]
        lib.calbench_selective_rows.restype = None
        lib.calbench_mmce_rows.argtypes = [i64, i64, p, p, p, p, p]
        lib.calbench_mmce_rows.restype = None
        lib.calbench_key_walk.argtypes = [i64, p, f64, i64, i64, p, p]
        lib.calbench_key_walk.restype = None
        lib.calbench_classwise_rows.argtypes = [i64, i64, p, p, i64, i64, i64, p, p, p, p, p]
        lib.calbench_classwise_rows.restype = None
        lib.calbench_permute_rows.argtypes = [i64, i64, p, p]
        lib.calbench_permute_rows.restype = ctypes.c_int
        lib.calbench_sweep_rows.argtypes = [i64, i64, p, p, p, f64, p]
        lib.calbench_sweep_rows.restype = ctypes.c_int
        lib._calbench_typed = True
    return lib


def adaptive_order(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Sort by r, ties broken by c: equal-mass groups then depend only on the multiset of (r_i, c_i),
    which makes aece permutation invariant even when confidences tie across a group boundary; every
    path here reads the samples in this order (calibration.py re-exports it)."""
    return np.lexsort((correct, conf))


def sorted_inputs(stats: SampleStats, W: np.ndarray):
    """(W, r, c) with W's columns, the confidences and the correctness in the adaptive order: as
    they are when the samples are sorted (the bootstrap sorts them once), else reordered."""
    r, c = stats.sample("conf"), stats.sample("correct")
    if sorted_samples(stats):
        return W, r, c
    order = cached(stats, "adaptive_order", lambda: adaptive_order(r, c))
    return W[:, order], r[order], c[order]


def run_ends(r_sorted: np.ndarray) -> np.ndarray:
    """uint8 flag of the last sample of each run of equal values in a sorted array."""
    return np.append(r_sorted[1:] != r_sorted[:-1], True).astype(np.uint8)


def run_slopes(c_sorted: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per sample: 1 - c where its run of equal confidence is pure (every sample of it has the same
    c: the run's error share under any counts), -1 where the run mixes correct and wrong samples."""
    last = np.flatnonzero(ends)
    starts = np.concatenate([[0], last[:-1] + 1])
    mixed = np.maximum.reduceat(c_sorted, starts) != np.minimum.reduceat(c_sorted, starts)
    return np.where(np.repeat(mixed, np.diff(np.append(starts, c_sorted.size))), -1.0, 1.0 - c_sorted)


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _layout(stats: SampleStats, W: np.ndarray):
    """(lib, W C-contiguous float64 in the adaptive order, r, c, run-end flags) or None."""
    lib = _kernel()
    if lib is None or W.ndim != 2 or W.shape[1] == 0:
        return None
    Ws, r, c = sorted_inputs(stats, W)
    key = "sorted_run_ends" if sorted_samples(stats) else "unsorted_run_ends"
    ends = cached(stats, key, lambda: run_ends(r))
    r, c = np.ascontiguousarray(r, dtype=np.float64), np.ascontiguousarray(c, dtype=np.float64)
    return lib, np.ascontiguousarray(Ws, dtype=np.float64), r, c, ends


def conf_rows(stats: SampleStats, W: np.ndarray) -> dict | None:
    """{"binned": (count, sum c, sum r) (b, M) each, "aece": (b,), "ks": (b,)} of each count row,
    one walk per row (memoised per W), or None without the kernel."""
    memo = weighted(stats, W)
    if "conf_rows" not in memo:
        got = _layout(stats, W)
        if got is None:
            return None
        lib, Ws, r, c, ends = got
        b, n, M = Ws.shape[0], Ws.shape[1], stats.bins
        starts = cached(stats, f"bin_starts_{M}_{sorted_samples(stats)}", lambda: np.searchsorted(
            bin_index(r, M), np.arange(M + 1), side="left").astype(np.int64))
        bins, aece, ks = np.empty((b, 3, M)), np.empty(b), np.empty(b)
        totals = np.ascontiguousarray(memo["total"], dtype=np.float64)
        lib.calbench_conf_rows(b, n, _ptr(Ws), _ptr(r), _ptr(c), _ptr(ends), M, _ptr(starts), M,
                               _ptr(totals), _ptr(bins), _ptr(aece), _ptr(ks))
        memo["conf_rows"] = {"binned": (bins[:, 0], bins[:, 1], bins[:, 2]), "aece": aece, "ks": ks}
    return memo["conf_rows"]


def selective_rows(stats: SampleStats, W: np.ndarray, coverages: tuple[float, ...] = COVERAGES) -> dict | None:
    """{"aurc", "augrc", "errors": (b,), "risk": {coverage: (b,)}} of each count row (one walk in
    decreasing confidence per row, memoised per W), or None without the kernel."""
    memo, name = weighted(stats, W), f"selective_rows_{coverages}"
    if name not in memo:
        got = _layout(stats, W)
        if got is None:
            return None
        lib, Ws, r, c, ends = got
        b, n = Ws.shape
        totals = np.ascontiguousarray(memo["total"], dtype=np.float64)
        H = np.arange(int(np.rint(totals.max(initial=0.0))) + 1, dtype=np.float64)
        np.reciprocal(H[1:], out=H[1:])
        np.cumsum(H, out=H)  # H[m] = sum_{j <= m} 1/j, H[0] = 0
        cov = np.asarray(coverages, dtype=np.float64)
        if cov.size > 8:
            raise ValueError("selective_rows: at most 8 coverages per walk")
        k_at = np.ascontiguousarray(np.ceil(np.round(cov[None, :] * totals[:, None], 9)))
        errors = Ws @ (1.0 - c)  # integer counts: exact in any order
        aurc, augrc, risk = np.empty(b), np.empty(b), np.empty((b, cov.size))
        slope = cached(stats, f"run_slopes_{sorted_samples(stats)}", lambda: run_slopes(c, ends))
        lib.calbench_selective_rows(b, n, _ptr(Ws), _ptr(c), _ptr(ends), _ptr(slope), _ptr(H), cov.size, _ptr(k_at),
                                    _ptr(totals), _ptr(errors), _ptr(aurc), _ptr(augrc), _ptr(risk))
        memo[name] = {"aurc": aurc, "augrc": augrc, "errors": errors, "totals": totals,
                      "risk": {q: risk[:, j] for j, q in enumerate(coverages)}}
    return memo[name]


def counts(idx: np.ndarray, order_of: np.ndarray) -> np.ndarray | None:
    """(b, n) float64 counts: [j, order_of[i]] = how often row j of idx drew sample i (the
    bootstrap's count matrix with its columns in the sorted order), or None without the kernel."""
    lib = _kernel()
    if lib is None or idx.ndim != 2:
        return None
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    order_of = np.ascontiguousarray(order_of, dtype=np.int64)
    b, n = idx.shape[0], order_of.shape[0]
    if idx.shape[1] != n:
        return None
    W = np.empty((b, n))
    return W if lib.calbench_counts(b, n, _ptr(idx), _ptr(order_of), _ptr(W)) == 0 else None


def mmce_rows(stats: SampleStats, W: np.ndarray, width: float) -> np.ndarray | None:
    """sum_ij w_i w_j a_i a_j exp(-|r_i - r_j| / width), a = c - r, of each count row, or None."""
    got = _layout(stats, W)
    if got is None:
        return None
    lib, Ws, r, c, _ = got
    a, up, down = cached(stats, f"mmce_factors_{sorted_samples(stats)}_{width}",
                         lambda: (c - r, np.exp(r / width), np.exp(-r / width)))
    out = np.empty(Ws.shape[0])
    lib.calbench_mmce_rows(Ws.shape[0], Ws.shape[1], _ptr(Ws), _ptr(a), _ptr(up), _ptr(down), _ptr(out))
    return out


def sweep_rows(stats: SampleStats, W: np.ndarray) -> np.ndarray | None:
    """ECE_sweep of each count row (ece_variants.sweep, any totals), or None without the kernel."""
    got = _layout(stats, W)
    if got is None:
        return None
    lib, Ws, r, c, _ = got
    out = np.empty(Ws.shape[0])
    if lib.calbench_sweep_rows(Ws.shape[0], Ws.shape[1], _ptr(Ws), _ptr(r), _ptr(c), MONOTONE_TOL, _ptr(out)):
        return None
    return out


def key_walk(stats: SampleStats, coverages: tuple[float, ...] = COVERAGES) -> dict | None:
    """Point estimates {"aece", "ks", "aurc", "augrc", "errors", "risk": {coverage: value}} from ONE
    walk over the sorted packed keys (stats.sorted_key), memoised on stats; None without the kernel."""
    name = f"key_walk_{coverages}"
    if name not in stats.cache:
        lib = _kernel()
        if lib is None or stats.key is None or stats.n == 0:
            return None
        key = sorted_key(stats)
        errors = float(stats.n - stats.totals["correct"])
        cov = np.asarray(coverages, dtype=np.float64)
        k_at = np.ascontiguousarray(np.ceil(np.round(cov * stats.n, 9)))
        out = np.empty(4 + cov.size)
        lib.calbench_key_walk(stats.n, _ptr(key), errors, stats.bins, cov.size, _ptr(k_at), _ptr(out))
        stats.cache[name] = {"aece": float(out[0]), "ks": float(out[1]), "aurc": float(out[2]),
                             "augrc": float(out[3]), "errors": errors,
                             "risk": {q: float(out[4 + j]) for j, q in enumerate(coverages)}}
    return stats.cache[name]


def classwise_rows(W: np.ndarray, labels: np.ndarray, num_classes: int, cells: int, entries) -> tuple | None:
    """(label counts (b, K), cell sums (b, cells)) of each count row: sum_i w_i 1[y_i = k], and
    sum_e w_{sample_e} value_e per cell of the entries (sample, cell, value) sorted by sample (the
    sparse products of cece's weighted path in one walk per row), or None without the kernel."""
    lib = _kernel()
    if lib is None:
        return None
    W = np.ascontiguousarray(W, dtype=np.float64)
    sample, cell, value = entries
    b, n = W.shape
    lab, hi = np.empty((b, num_classes)), np.empty((b, cells))
    lib.calbench_classwise_rows(b, n, _ptr(W), _ptr(labels), num_classes, cells, sample.size, _ptr(sample),
                                _ptr(cell), _ptr(value), _ptr(lab), _ptr(hi))
    return lab, hi


def permute_rows(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """a[order] for a C-contiguous float64 (n, K) array the caller owns, in place by the kernel (no
    second (n, K) array); a new a[order] where the kernel is not built or declines."""
    lib = _kernel()
    if lib is None or a.ndim != 2 or a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
        return a[order]
    order = np.ascontiguousarray(order, dtype=np.int64)
    if order.shape != (a.shape[0],):
        return a[order]
    if lib.calbench_permute_rows(a.shape[0], a.shape[1], _ptr(a), _ptr(order)) != 0:
        raise ValueError("permute_rows: order is not a permutation of the rows")
    return a
