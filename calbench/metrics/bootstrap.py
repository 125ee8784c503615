"""Vectorised nonparametric bootstrap of every metric from the same resampled indices (docs/metrics.md).

A resample is a row of per-sample counts w (how often each test sample was drawn). Every registered
metric is called with a (b, n) block of such count rows (its `weights` path, see registry.py): binned
metrics become sparse products over bins that never change (a sample's bin is fixed by its
confidence), aece cuts each resampled multiset into equal-mass groups with cumulative counts over the
sorted samples, smece and sece smooth weighted grid histograms. A metric declared
`resample="explicit"` is recomputed on each explicit resample instead. Tests check every statistic
against the metric recomputed on the explicit resample to 1e-9.

Intervals are percentile intervals. Calibration errors are biased upward under resampling, so when
a model is nearly calibrated (ece, cece, smece near 0) the interval can lie entirely above the point
estimate; that is a property of the percentile bootstrap, not a bug.
"""

from __future__ import annotations

import numpy as np

from calbench.errors import InputError
from calbench.metrics.calibration import adaptive_order
from calbench.metrics.core import check_bins, evaluate, needs_of, resolve_keys
from calbench.metrics.inputs import Prepared, prepare
from calbench.metrics.registry import METRICS
from calbench.metrics.stats import collect

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
    """The SampleStats of one prediction set with its per-sample arrays kept and sorted in the
    adaptive order (by r, then c: aece needs it, and the grid histograms then read the count matrix
    sequentially); stats_of_indices(idx) gives every metric of every resample row of idx."""

    def __init__(self, prep: Prepared, bins: int, keys: tuple[str, ...], class_counts=None, shot_thresholds=None):
        from calbench.metrics.longtail import shot_groups_for

        self.keys, self.bins, self.n, self.k, self.prep = keys, bins, prep.n, prep.num_classes, prep
        needs = needs_of(keys)
        self.shots = shot_groups_for(keys, needs, prep.num_classes, class_counts, shot_thresholds)
        st = collect(prep, bins, needs, keep_samples=True, check_values=False, shot_of_class=self.shots)
        self.point = evaluate(st, keys)  # the same numbers as compute_metrics (the same pass and code)
        order = adaptive_order(st.samples["conf"], st.samples["correct"])
        self.order, self.inv = order, np.empty_like(order)
        self.inv[order] = np.arange(self.n)
        st.samples = {name: a[order] for name, a in st.samples.items()}
        st.key, st.cache["sorted"] = None, True
        self.sample_stats = st

    def stats_of_indices(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) resampled indices (original sample numbering)."""
        return self.stats(counts_from_indices(self.inv[idx], self.n))

    def stats(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) count matrix W, whose columns follow self.order."""
        weighted = [k for k in self.keys if METRICS.get(k).resample == "weights"]
        out = evaluate(self.sample_stats, weighted, W)
        out.update({k: self.explicit(k, W) for k in self.keys if k not in out})
        return {k: out[k] for k in self.keys}

    def explicit(self, key: str, W: np.ndarray) -> np.ndarray:
        """Metric `key` recomputed on the explicit resample of each row of W (the fallback for a
        metric that cannot take weights; also what the weights path is tested against)."""
        spec, prep, values = METRICS.get(key), self.prep, []
        for w in W:
            rows = self.order[np.repeat(np.arange(self.n), w.astype(np.int64))]
            sub = Prepared(prep.labels[rows], prep.scores[rows], prep.kind, prep.segmentation)
            st = collect(sub, self.bins, spec.needs, check_values=False, shot_of_class=self.shots)
            values.append(evaluate(st, (key,))[key])
        return np.asarray(values, dtype=np.float64)


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def _check(B: int, ci: float) -> None:
    if int(B) < 1:
        raise InputError(f"bootstrap B must be a positive integer, got {B}")
    if not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), got {ci}")


def _samples(resamplers, n: int, B: int, seed: int) -> list[dict[str, np.ndarray]]:
    parts = [dict() for _ in resamplers]
    for idx in _index_blocks(n, B, seed):
        for part, rs in zip(parts, resamplers):
            for key, v in rs.stats_of_indices(idx).items():
                part.setdefault(key, []).append(v)
    return [{k: np.concatenate(v) for k, v in part.items()} for part in parts]


def bootstrap_metrics(labels, *, logits=None, probs=None, B: int = 1000, seed: int = 0, ci: float = 0.95,
                      keys=None, bins: int = 15, ignore_index: int | None = None, class_counts=None,
                      shot_thresholds=None) -> dict:
    """Point estimates, percentile intervals and the (B,) bootstrap samples of every metric, all from
    the resampled indices bootstrap_indices(n, B, seed).

    Returns {"point": {k: v}, "ci": {k: (lo, hi)}, "samples": {k: (B,)}}.
    """
    _check(B, ci)
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index)
    keys = resolve_keys(keys, prep.segmentation)
    check_bins(bins)
    rs = Resampler(prep, int(bins), keys, class_counts, shot_thresholds)
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
    check_bins(bins)
    ra, rb = Resampler(pa, int(bins), keys), Resampler(pb, int(bins), keys)
    a, b = ra.point, rb.point
    sa, sb = _samples([ra, rb], pa.n, int(B), seed)
    diff = {k: sa[k] - sb[k] for k in keys}
    return {"point": {k: a[k] - b[k] for k in keys}, "ci": {k: _interval(diff[k], ci) for k in keys},
            "samples": diff, "a": a, "b": b}


def seed_bootstrap(runs, *, B: int = 1000, seed: int = 0, ci: float = 0.95, keys=None, bins: int = 15,
                   ignore_index: int | None = None) -> dict:
    """Two-level bootstrap across training seeds (docs/metrics.md): the point estimate is the mean over
    runs; resample b draws S runs with replacement, each drawn copy gets its own resample of that
    run's test samples, and the statistic is the mean over the S copies.

    runs: a sequence of mappings with "labels" and "logits" or "probs" (one per seed).
    Generator stream, so that a report is reproducible: rng = default_rng(seed); first the drawn
    runs rng.integers(0, S, (B, S)); then, run by run, the test-sample indices of all its copies
    in (b, copy) order, rng.integers(0, n_s, (copies, n_s)) in blocks.
    Returns {"point", "ci", "samples"} like bootstrap_metrics, plus "per_run": [point dicts].
    """
    _check(B, ci)
    check_bins(bins)
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
