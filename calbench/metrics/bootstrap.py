"""Vectorised nonparametric bootstrap of every metric from the same resampled indices.

A resample is a row of per-sample counts w (how often each test sample was drawn). Binned metrics are
then weighted sums over bins that never change (a sample's bin is fixed by its confidence), computed
for a whole block of resamples by one sparse product W @ S. aece sorts once and cuts the resampled
multiset into equal-mass groups with cumulative counts; smece and sece smooth weighted grid
histograms. No metric is recomputed per resample in a Python loop; tests check every statistic
against the metric recomputed on the explicit resample to 1e-9.

Intervals are percentile intervals (METRICS.md). Calibration errors are biased upward under
resampling, so when a model is nearly calibrated (ece, cece, smece near 0) the interval can lie
entirely above the point estimate; that is a property of the percentile bootstrap, not a bug.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from calbench.errors import InputError
from calbench.metrics import calibration, smooth
from calbench.metrics.binning import bin_edges, bin_index, equal_mass_groups
from calbench.metrics.core import metrics_from_rows, resolve_keys
from calbench.metrics.inputs import Prepared, prepare
from calbench.metrics.rows import probs_block, summarise
from calbench.metrics.segmentation import confusion_keys, miou_from_confusion

BLOCK_ELEMENTS = 2_500_000  # resamples x samples held at once (20 MB of float64 counts)


def bootstrap_indices(n: int, B: int, seed: int) -> np.ndarray:
    """The (B, n) resampled indices: np.random.default_rng(seed).integers(0, n, (B, n))."""
    return np.random.default_rng(seed).integers(0, n, (B, n))


def _index_blocks(n: int, B: int, seed: int):
    """bootstrap_indices(n, B, seed) in consecutive row blocks (the generator's stream is the same)."""
    rng = np.random.default_rng(seed)
    step = max(1, BLOCK_ELEMENTS // max(1, n))
    for start in range(0, B, step):
        yield rng.integers(0, n, (min(step, B - start), n))


def counts_from_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """(b, n) float64 matrix: entry [j, i] = how many times resample j drew sample i."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


class Resampler:
    """Precomputed per-sample structure of one prediction set; stats_of_indices(idx) gives every metric
    of every resample row of idx."""

    def __init__(self, prep: Prepared, bins: int, keys: tuple[str, ...]):
        self.keys, self.bins, self.n, self.k = keys, bins, prep.n, prep.num_classes
        rows = summarise(prep, bins, classwise="cece" in keys)
        self.point = metrics_from_rows(rows, keys)  # the same numbers as compute_metrics
        # Every per-sample array is kept in the adaptive sort order (by r, then c): aece needs it, and
        # the grid histograms of smece / sece then read the count matrix sequentially.
        order = calibration.adaptive_order(rows.conf, rows.correct)
        self.order, self.inv = order, np.empty_like(order)
        self.inv[order] = np.arange(self.n)
        self.conf, self.correct = rows.conf[order], rows.correct[order]
        self.grids: dict = {}  # smooth.grid_matrix cache, shared by every index block
        n, M = self.n, bins
        ar = np.arange(n)
        b = bin_index(self.conf, M)
        # columns: count per bin | sum c per bin | sum r per bin | c | nll | brier
        cols = np.concatenate([b, M + b, 2 * M + b, np.full(n, 3 * M), np.full(n, 3 * M + 1), np.full(n, 3 * M + 2)])
        vals = np.concatenate([np.ones(n), self.correct, self.conf, self.correct, rows.nll[order],
                               rows.brier[order]])
        self.S = scipy.sparse.csr_matrix((vals, (np.tile(ar, 6), cols)), shape=(n, 3 * M + 3)).T.tocsr()
        self.edges = equal_mass_groups(n, M)
        if "cece" in keys:
            self._init_cece(prep)
        if "miou" in keys:
            cells = confusion_keys(rows.labels[order], rows.pred[order], self.k)
            self.Cm = scipy.sparse.csr_matrix((np.ones(n), (ar, cells)), shape=(n, self.k ** 2)).T.tocsr()

    def _init_cece(self, prep: Prepared) -> None:
        """Class totals sum_i w_i (p_ik - y_ik) come from a dense W @ P and a sparse label count; the
        few entries with p_ik above the first bin go to a sparse (n, K*M) matrix; the first bin's
        sum is the class total minus the others."""
        n, k, M = self.n, self.k, self.bins
        self.P = np.empty((n, k))
        ri, ci, vi = [], [], []
        first_edge = bin_edges(M)[1]
        for start, stop in prep.chunks():
            p, _ = probs_block(prep, start, stop)
            self.P[start:stop] = p
            r, c = np.nonzero(p > first_edge)  # exactly the entries outside bin 0 = [0, 1/M]
            pv = p[r, c]
            d = pv - (prep.labels[start:stop][r] == c)
            ri.append(r + start), ci.append(c * M + bin_index(pv, M)), vi.append(d)
        self.P = self.P[self.order]
        self.Y = scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), prep.labels[self.order])),
                                         shape=(n, k)).T.tocsr()
        self.Shi = scipy.sparse.csr_matrix((np.concatenate(vi), (self.inv[np.concatenate(ri)], np.concatenate(ci))),
                                           shape=(n, k * M)).T.tocsr()

    def stats_of_indices(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) resampled indices (original sample numbering)."""
        return self.stats(counts_from_indices(self.inv[idx], self.n))

    def stats(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) count matrix W, whose columns follow self.order."""
        M, out = self.bins, {}
        Wt = np.ascontiguousarray(W.T)  # (n, b): sparse @ dense wants C order
        total = W.sum(axis=1)
        T = (self.S @ Wt).T  # (b, 3M + 3)
        cnt, sc, sr = T[:, :M], T[:, M:2 * M], T[:, 2 * M:3 * M]
        for key in self.keys:
            if key == "acc":
                out[key] = T[:, 3 * M] / total
            elif key == "nll":
                out[key] = T[:, 3 * M + 1] / total
            elif key == "brier":
                out[key] = T[:, 3 * M + 2] / total
            elif key == "ece":
                out[key] = calibration.ece_from_sums(cnt, sc, sr, total)
            elif key == "mce":
                out[key] = calibration.mce_from_sums(cnt, sc, sr)
            elif key == "aece":
                out[key] = self._aece(W)
            elif key == "cece":
                out[key] = self._cece(W, Wt, total)
            elif key == "smece":
                out[key] = smooth.smece(self.conf, self.correct, Wt, self.grids)
            elif key == "sece":
                out[key] = smooth.sece(self.conf, self.correct, Wt, cache=self.grids)
            elif key == "miou":
                conf = (self.Cm @ Wt).T.reshape(-1, self.k, self.k)
                out[key] = miou_from_confusion(conf)
        return out

    def _cece(self, W: np.ndarray, Wt: np.ndarray, total: np.ndarray) -> np.ndarray:
        k, M = self.k, self.bins
        class_total = W @ self.P - (self.Y @ Wt).T  # (b, K): sum_i w_i (p_ik - y_ik)
        hi = (self.Shi @ Wt).T.reshape(-1, k, M)  # bins >= 1 (bin 0 entries are zero here)
        first = class_total - hi[:, :, 1:].sum(axis=2)
        s = np.abs(hi[:, :, 1:]).sum(axis=2) + np.abs(first)
        return s.mean(axis=1) / total

    def _aece(self, W: np.ndarray) -> np.ndarray:
        """Equal-mass groups of each resampled multiset, sorted as the point estimate sorts."""
        b, n = W.shape
        Ws = W  # columns already in the sorted order
        c, r = self.correct, self.conf
        cw = np.cumsum(Ws, axis=1)
        cc = np.cumsum(Ws * c, axis=1)
        cr = np.cumsum(Ws * r, axis=1)
        pos = self.edges[1:].astype(np.float64)  # group ends 1..n in the expanded sorted multiset
        off = np.arange(b)[:, None] * (n + 1.0)
        j = np.searchsorted((cw + off).ravel(), (pos[None, :] + off).ravel(), side="left").reshape(b, -1)
        j -= (np.arange(b) * n)[:, None]
        rows = np.arange(b)[:, None]
        excess = cw[rows, j] - pos[None, :]
        fc = cc[rows, j] - excess * c[j]
        fr = cr[rows, j] - excess * r[j]
        zero = np.zeros((b, 1))
        gc = np.diff(np.concatenate([zero, fc], axis=1), axis=1)
        gr = np.diff(np.concatenate([zero, fr], axis=1), axis=1)
        return np.abs(gc - gr).sum(axis=1) / n


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def _check(B: int, ci: float) -> None:
    if int(B) < 1:
        raise InputError(f"bootstrap B must be a positive integer, got {B}")
    if not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), got {ci}")


def _check_bins(bins) -> None:
    if int(bins) < 1:
        raise InputError(f"bins must be a positive integer, got {bins}")


def _samples(resamplers, n: int, B: int, seed: int) -> list[dict[str, np.ndarray]]:
    parts = [dict() for _ in resamplers]
    for idx in _index_blocks(n, B, seed):
        for part, rs in zip(parts, resamplers):
            for key, v in rs.stats_of_indices(idx).items():
                part.setdefault(key, []).append(v)
    return [{k: np.concatenate(v) for k, v in part.items()} for part in parts]


def bootstrap_metrics(labels, *, logits=None, probs=None, B: int = 1000, seed: int = 0, ci: float = 0.95,
                      keys=None, bins: int = 15, ignore_index: int | None = None) -> dict:
    """Point estimates, percentile intervals and the (B,) bootstrap samples of every metric, all from
    the resampled indices bootstrap_indices(n, B, seed).

    Returns {"point": {k: v}, "ci": {k: (lo, hi)}, "samples": {k: (B,)}}.
    """
    _check(B, ci)
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index)
    keys = resolve_keys(keys, prep.segmentation)
    _check_bins(bins)
    rs = Resampler(prep, int(bins), keys)
    (samples,) = _samples([rs], prep.n, int(B), seed)
    return {"point": rs.point, "ci": {k: _interval(samples[k], ci) for k in keys}, "samples": samples}


def paired_bootstrap(labels, *, logits_a=None, probs_a=None, logits_b=None, probs_b=None, B: int = 1000,
                     seed: int = 0, ci: float = 0.95, keys=None, bins: int = 15,
                     ignore_index: int | None = None) -> dict:
    """Paired difference a - b of two prediction sets on the same samples, both resampled with the
    same indices. Returns {"point": {k: a - b}, "ci": {k: (lo, hi)}, "samples": {k: (B,)},
    "a": {k: v}, "b": {k: v}}."""
    _check(B, ci)
    pa = prepare(labels, logits=logits_a, probs=probs_a, ignore_index=ignore_index)
    pb = prepare(labels, logits=logits_b, probs=probs_b, ignore_index=ignore_index)
    if pa.scores.shape != pb.scores.shape:
        raise InputError(f"shape mismatch: prediction sets a {pa.scores.shape} and b {pb.scores.shape}")
    keys = resolve_keys(keys, pa.segmentation)
    _check_bins(bins)
    ra, rb = Resampler(pa, int(bins), keys), Resampler(pb, int(bins), keys)
    a, b = ra.point, rb.point
    sa, sb = _samples([ra, rb], pa.n, int(B), seed)
    diff = {k: sa[k] - sb[k] for k in keys}
    return {"point": {k: a[k] - b[k] for k in keys}, "ci": {k: _interval(diff[k], ci) for k in keys},
            "samples": diff, "a": a, "b": b}


def seed_bootstrap(runs, *, B: int = 1000, seed: int = 0, ci: float = 0.95, keys=None, bins: int = 15,
                   ignore_index: int | None = None) -> dict:
    """Two-level bootstrap across training seeds (METRICS.md): the point estimate is the mean over
    runs; resample b draws S runs with replacement, each drawn copy gets its own resample of that
    run's test samples, and the statistic is the mean over the S copies.

    runs: a sequence of mappings with "labels" and "logits" or "probs" (one per seed).
    Generator stream, so that a report is reproducible: rng = default_rng(seed); first the drawn
    runs rng.integers(0, S, (B, S)); then, run by run, the test-sample indices of all its copies
    in (b, copy) order, rng.integers(0, n_s, (copies, n_s)) in blocks.
    Returns {"point", "ci", "samples"} like bootstrap_metrics, plus "per_run": [point dicts].
    """
    _check(B, ci)
    _check_bins(bins)
    runs = list(runs)
    if not runs:
        raise InputError("seed_bootstrap needs at least one run")
    preps = []
    for i, run in enumerate(runs):
        try:
            preps.append(prepare(run.get("labels"), logits=run.get("logits"), probs=run.get("probs"),
                                 ignore_index=ignore_index))
        except InputError as err:
            raise InputError(f"run {i}: {err}") from None
    keys = resolve_keys(keys, preps[0].segmentation)
    S, B = len(preps), int(B)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in keys}
    per_run = []
    for s, prep in enumerate(preps):
        rs = Resampler(prep, int(bins), keys)
        per_run.append(rs.point)
        owner = np.nonzero(drawn.ravel() == s)[0] // S  # resample b of each copy, in (b, copy) order
        step = max(1, BLOCK_ELEMENTS // max(1, prep.n))
        for start in range(0, owner.shape[0], step):
            chunk = owner[start:start + step]
            stats = rs.stats_of_indices(rng.integers(0, prep.n, (chunk.shape[0], prep.n)))
            for k in keys:
                np.add.at(sums[k], chunk, stats[k])
    samples = {k: v / S for k, v in sums.items()}
    point = {k: float(np.mean([p[k] for p in per_run])) for k in keys}
    return {"point": point, "ci": {k: _interval(samples[k], ci) for k in keys}, "samples": samples,
            "per_run": per_run}
