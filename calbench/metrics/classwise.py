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

Under the bootstrap every resample's counts follow one fixed per-class order (ClassOrders). The C
kernel classwise_boot.c (built on first use by calbench.native) walks each class once per 16
resamples; where it is not built (no compiler, CALBENCH_NATIVE=0) or the counts are not integers in
[0, 255], the NumPy path (class_gap_sum) gives the same values to rounding.
"""

from __future__ import annotations

import ctypes

import numpy as np

from calbench import native
from calbench.metrics.calibration import cece
from calbench.metrics.equal_mass import group_ends
from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, sorted_samples

TACE_THRESHOLD = 1e-3
ORDER_CHUNK = 1 << 20  # class entries sorted at once while the class orders are built (8 MB of int64)

metric("sce", name="static calibration error", higher_is_better=False, percent=True, header="SCE",
       definition="Nixon et al.'s SCE: mean over classes of the equal-width ECE of p_ik (= cece)",
       needs=("classwise",), default=False, binning="equal-width", scope="class-wise")(cece)


class ClassOrders:
    """Every class's entries p_ik > threshold sorted ONCE by (p, target): `order[k, start[k]:]` are
    their sample indices (int32; the entries at or below the threshold sort first and are skipped),
    `gap` the matching 1[y = k] - p_ik. One sort of the (K, n) transposed probabilities packed with
    the target into uint64 keys ((bits of p) << 1 | 1[y = k]; p >= 0, so the integer order is the
    order by (p, target)) serves every class and every bootstrap block (the counts then follow this
    fixed order). Entries equal in both p and target may come in any order: they have the same
    gap, so no group sum depends on it. With indices=False (the point estimate: every sample once)
    the keys are only sorted, not argsorted, and `order` is None: the group sums then need the
    sorted gaps, not which sample each one is."""

    def __init__(self, P: np.ndarray, labels: np.ndarray, threshold: float, indices: bool = True):
        lib = _kernel() if P.shape[0] < 2**31 else None        # the kernel's indices are int32
        key = class_keys(P, labels, lib)
        if lib is not None:
            self._finish_kernel(lib, key, threshold, indices)
            return
        sorted_idx = np.argsort(key, axis=1) if indices else None
        if not indices:
            key.sort(axis=1)
        self._finish_numpy(key, sorted_idx, threshold)

    def _finish_kernel(self, lib: ctypes.CDLL, key: np.ndarray, threshold: float, indices: bool) -> None:
        """_finish_numpy in C, in place, a few classes at a time: each chunk's keys argsorted (or
        sorted), then calbench_tace_finish turns them into the gaps and narrows the chunk's argsort to
        int32, copied into `order`. The only (K, n) arrays are the keys (they become the gaps) and the
        int32 order: no (K, n) int64 argsort (80 MB at 50,000 x 200, whose first touch costs more
        than the sort). MemoryError where the kernel's row buffer cannot be allocated."""
        k, n = key.shape
        self.start = np.empty(k, dtype=np.int64)
        self.order = np.empty((k, n), dtype=np.int32) if indices else None
        step = max(1, ORDER_CHUNK // max(1, n))
        for k0 in range(0, k, step):
            rows = key[k0:k0 + step]
            kc = rows.shape[0]
            idx = np.argsort(rows, axis=1) if indices else None
            if not indices:
                rows.sort(axis=1)
            if lib.calbench_tace_finish(n, kc, rows.ctypes.data, None if idx is None else idx.ctypes.data,
                                        threshold, self.start[k0:].ctypes.data):
                raise MemoryError("tace: no memory for the class orders' row buffer")
            if indices:
                self.order[k0:k0 + kc] = idx.reshape(-1).view(np.int32)[:kc * n].reshape(kc, n)
        self.gap = key.view(np.float64)

    def _finish_numpy(self, key: np.ndarray, sorted_idx: np.ndarray | None, threshold: float) -> None:
        """order, gap and start from the keys and their argsort (None: the keys are sorted)."""
        self.order = None if sorted_idx is None else sorted_idx.astype(np.int32 if key.shape[1] < 2**31 else np.int64)
        if sorted_idx is not None:
            key = np.take_along_axis(key, sorted_idx, axis=1)
        p_sorted = (key >> np.uint64(1)).view(np.float64)
        self.gap = (key & np.uint64(1)).astype(np.float64) - p_sorted
        self.start = np.count_nonzero(p_sorted <= threshold, axis=1).astype(np.int64)

    def classes(self):
        """(sample indices or None, 1[y = k] - p) of each class's entries above the threshold, sorted."""
        for k, lo in enumerate(self.start):
            yield None if self.order is None else self.order[k, lo:], self.gap[k, lo:]


def class_keys(P: np.ndarray, labels: np.ndarray, lib: ctypes.CDLL | None) -> np.ndarray:
    """(K, n) uint64 keys (bits of p_ik) << 1 | 1[y_i = k] of the (n, K) probabilities."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    if lib is None:
        key = np.ascontiguousarray(P.T).view(np.uint64) << np.uint64(1)
        return key | (labels[None, :] == np.arange(P.shape[1])[:, None]).astype(np.uint64)
    key = np.empty(P.shape[::-1], dtype=np.uint64)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    lib.calbench_tace_keys(P.shape[0], P.shape[1], P.ctypes.data, labels.ctypes.data, key.ctypes.data)
    return key


def class_gap_sum(Wk: np.ndarray, gap: np.ndarray, bins: int) -> np.ndarray:
    """sum_r |sum_{i in range r} w_i (1[y_i = k] - p_ik)| / N_k of one class for each row of its
    counts Wk (b, n_k) in sorted order: the ranges are the equal-mass groups of each row's multiset
    (equal_mass.py), found in ONE search over the cumulative counts of every row laid end to end
    (a row's cumulative counts then start at the total of the rows before it)."""
    b, m = Wk.shape
    if m == 0:
        return np.zeros(b)
    flat = np.cumsum(Wk, axis=None)
    totals = np.diff(flat[m - 1::m], prepend=0.0)
    base = flat[m - 1::m] - totals
    ends = group_ends(totals, bins) + base[:, None]
    j = np.searchsorted(flat, ends.ravel(), side="left").reshape(b, bins)
    j = np.clip(j - (np.arange(b) * m)[:, None], 0, m - 1)  # an end at a row's start may land before it
    rows = np.arange(b)[:, None]
    cum_gap = np.cumsum(Wk * gap, axis=1)
    excess = flat.reshape(b, m)[rows, j] - ends
    prefix = cum_gap[rows, j] - excess * gap[j]
    return np.abs(np.diff(prefix, axis=1, prepend=0.0)).sum(axis=1) / np.maximum(totals, 1.0)


def tace_of(orders: ClassOrders, W: np.ndarray | None, bins: int) -> np.ndarray:
    """TACE for each row of the counts W (None: every sample once): the C kernel's walk
    (classwise_boot.c) where it is built and W holds integer counts in [0, 255], else NumPy."""
    if W is not None:
        fast = kernel_tace(orders, W, bins)
        if fast is not None:
            return fast
    return numpy_tace(orders, W, bins)


def unit_gap_sum(gap: np.ndarray, bins: int) -> np.ndarray:
    """class_gap_sum(np.ones((1, m)), gap, bins), bit for bit, without its search: with every count
    1 the cumulative counts are 1..m, so a group ending at position e ends after entry e - 1 with
    nothing to split off (an empty group ends at 0, where the prefix is 0). The point estimate."""
    m = gap.size
    if m == 0:
        return np.zeros(1)
    ends = group_ends(np.array([float(m)]), bins).astype(np.int64)[0]
    prefix = np.concatenate([[0.0], np.cumsum(gap)])[ends]
    return np.array([np.abs(np.diff(prefix, prepend=0.0)).sum() / max(float(m), 1.0)])


def numpy_tace(orders: ClassOrders, W: np.ndarray | None, bins: int) -> np.ndarray:
    """tace_of by NumPy: class_gap_sum of each class's gathered counts (unit_gap_sum for W None)."""
    total = np.zeros(1 if W is None else W.shape[0])
    for idx, gap in orders.classes():
        total += unit_gap_sum(gap, bins) if W is None else class_gap_sum(np.take(W, idx, axis=1), gap, bins)
    return total / orders.gap.shape[0]


def _kernel() -> ctypes.CDLL | None:
    return typed(native.load("classwise_boot", package="metrics"))


def typed(lib: ctypes.CDLL | None) -> ctypes.CDLL | None:
    """The classwise_boot library with its functions' argument types declared."""
    if lib is not None and not hasattr(lib, "_calbench_typed"):
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.calbench_tace_rows.argtypes = [i64, i64, ctypes.c_int32, ptr, ptr, ptr, ptr, i64, ptr]
        lib.calbench_tace_rows.restype = ctypes.c_int
        lib.calbench_tace_keys.argtypes = [i64, i64, ptr, ptr, ptr]
        lib.calbench_tace_keys.restype = None
        lib.calbench_tace_finish.argtypes = [i64, i64, ptr, ptr, ctypes.c_double, ptr]
        lib.calbench_tace_finish.restype = ctypes.c_int
        lib._calbench_typed = True
    return lib


def kernel_tace(orders: ClassOrders, W: np.ndarray, bins: int) -> np.ndarray | None:
    """tace_of(orders, W, bins) by the C kernel, or None where it is not built (no compiler,
    CALBENCH_NATIVE=0) or declines W (a count that is not an integer in [0, 255])."""
    lib = _kernel()
    if lib is None or orders.order.dtype != np.int32:
        return None
    W = np.ascontiguousarray(W, dtype=np.float64)
    k, n = orders.order.shape
    if W.ndim != 2 or W.shape[1] != n:
        raise ValueError(f"tace: weights of shape {W.shape} for {n} samples")
    out = np.empty(W.shape[0])
    rc = lib.calbench_tace_rows(n, k, bins, orders.order.ctypes.data, orders.start.ctypes.data,
                                orders.gap.ctypes.data, W.ctypes.data, W.shape[0], out.ctypes.data)
    return out if rc == 0 else None


@metric("tace", name="thresholded adaptive calibration error", higher_is_better=False, percent=True,
        header="TACE", definition="per class, entries p_ik > 1e-3 in M equal-mass ranges; mean over classes",
        needs=("probs",), default=False, binning="equal-mass", scope="class-wise")
def tace(stats: SampleStats, weights: np.ndarray | None):
    """The point estimate reads only each class's sorted gaps, the same with indices or without (ties
    in (p, target) have equal gaps): with the bootstrap's orders built (its sorted samples kept), the
    point takes them too instead of a sort of its own."""
    if weights is None and not (sorted_samples(stats) and "probs" in stats.samples):
        orders = ClassOrders(stats.probs, stats.labels, TACE_THRESHOLD, indices=False)
        return float(tace_of(orders, None, stats.bins)[0])
    orders = cached(stats, "tace", lambda: ClassOrders(stats.sample("probs"), stats.sample("labels"),
                                                       TACE_THRESHOLD))
    return float(tace_of(orders, None, stats.bins)[0]) if weights is None else tace_of(orders, weights, stats.bins)
