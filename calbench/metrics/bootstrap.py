"""Vectorised nonparametric bootstrap of every metric from the same resampled indices (docs/metrics.md).

A resample is a row of per-sample counts w (how often each test sample was drawn). Every registered
metric is called with a (b, n) block of such count rows (its `weights` path, see registry.py): binned
metrics become sums over bins that never change (a sample's bin is fixed by its confidence), aece
cuts each resampled multiset into equal-mass groups with cumulative counts over the sorted samples,
smece and sece smooth weighted grid histograms. The metrics that read the samples in confidence
order take one C walk per count row where it is built (sorted_rows.py: running sums instead of
(b, n) cumulative arrays; their NumPy paths otherwise, equal to rounding). A metric declared
`resample="explicit"` is recomputed on each explicit resample instead. Tests check every statistic
against the metric recomputed on the explicit resample to 1e-9.

Three interval kinds (`interval=`, docs/metrics.md "Intervals"), all from the same B samples:
- "percentile": the (1 - ci)/2 and (1 + ci)/2 quantiles of the bootstrap samples (Efron 1979).
- "basic" (reverse percentile): (2 theta_hat - q_hi, 2 theta_hat - q_lo) (Davison & Hinkley 1997, eq. 5.6).
  A statistic biased upward under resampling (every calibration error: |.| of a noisy gap) has its
  bootstrap distribution shifted above theta_hat; reflecting it moves the interval down by that shift.
- "bca": bias-corrected and accelerated (Efron 1987; Efron & Tibshirani 1993, ch. 14.3): the bias
  correction z0 = Phi^-1(share of samples below theta_hat, ties counted half), the acceleration
  a = sum u^3 / (6 (sum u^2)^1.5) from jackknife influence values u. The jackknife runs through the
  same weights path: a leave-out row is a count row of ones with zeros on the left-out samples,
  exact leave-one-out for n <= JACKKNIFE_GROUPS, else a grouped jackknife over JACKKNIFE_GROUPS groups
  of a fixed random partition (the grouped estimate of a has the same expectation, Efron &
  Tibshirani 1993, ch. 11.5). Two-level (seeds): z0 as above against the mean over seeds; u pools
  the seed-level values (theta_s - mean)/S with every run's sample-level jackknife values / S.
"""

from __future__ import annotations

import functools

import numpy as np

from calbench.errors import InputError
from calbench.metrics.calibration import adaptive_order
from calbench.metrics.core import check_bins, evaluate, needs_of, resolve_keys
from calbench.metrics.forked import Claims, run_forked
from calbench.metrics.inputs import Prepared, prepare
from calbench.metrics.registry import METRICS
from calbench.metrics.sorted_rows import counts as sorted_counts, permute_rows
from calbench.metrics.stats import collect

BLOCK_ELEMENTS = 2_500_000  # resamples x samples held at once (20 MB of float64 counts)
LANE_ROWS = 16  # resamples per walk of tace's kernel (classwise_boot.c, LANES)
INTERVALS = ("percentile", "basic", "bca")
# Chosen by benchmarks/bench_intervals.py: the kind whose coverage of the true calibration error was
# closest to nominal over the study (table in docs/metrics.md).
DEFAULT_INTERVAL = "percentile"
JACKKNIFE_GROUPS = 100
# Coverage of the true value by each nominal 95% interval in benchmarks/bench_intervals.py (mean over
# its models, N and metrics; docs/metrics.md), quoted by every table footnote.
STUDY_COVERAGE: dict[str, float] = {"percentile": 0.946, "basic": 0.921, "bca": 0.924}


def bootstrap_indices(n: int, B: int, seed: int) -> np.ndarray:
    """The (B, n) resampled indices: np.random.default_rng(seed).integers(0, n, (B, n))."""
    return np.random.default_rng(seed).integers(0, n, (B, n))


def block_rows(n: int) -> int:
    """Resamples per block: BLOCK_ELEMENTS / n, rounded down to a multiple of LANE_ROWS when larger
    (tace's kernel walks LANE_ROWS resamples at once: 50 rows a block took 4 walks of 16 for 50
    rows' work; 48 rows take 3, and tace's kernel time fell 10-15% on 50,000 x 200)."""
    step = max(1, BLOCK_ELEMENTS // max(1, n))
    return step - step % LANE_ROWS if step > LANE_ROWS else step


def block_sizes(n: int, B: int) -> list[int]:
    """Rows of each block of _index_blocks: one lane group first (block 0 runs alone, before any
    worker starts, to build the structures every block reuses: the smaller, the sooner the workers
    start), then block_rows(n) each. The same whatever the worker count."""
    step = block_rows(n)
    first = min(B, LANE_ROWS if step > LANE_ROWS else step)
    return [first] + [min(step, B - start) for start in range(first, B, step)]


def _index_blocks(n: int, B: int, seed: int):
    """bootstrap_indices(n, B, seed) in consecutive row blocks (the generator's stream is the same)."""
    rng = np.random.default_rng(seed)
    for rows in block_sizes(n, B):
        yield rng.integers(0, n, (rows, n))


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
        order = adaptive_order(st.samples["conf"], st.samples["correct"])
        self.order, self.inv = order, np.empty_like(order)
        self.inv[order] = np.arange(self.n)
        # the (n, K) probabilities are collect's own array: sorted in place (no second copy)
        st.samples = {name: permute_rows(a, order) if name == "probs" else a[order] for name, a in st.samples.items()}
        st.cache["sorted"] = True
        if st.probs is not None:  # one (n, K) copy, sorted (st.probs was that same array)
            st.probs, st.labels = st.samples["probs"], st.samples["labels"]
        # the same numbers as compute_metrics: the same pass and code; point estimates read the pass's
        # sums and packed keys, or (tace) structures that depend only on the multiset of samples
        self.point = evaluate(st, keys)
        st.key = None
        self.sample_stats = st

    def stats_of_indices(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) resampled indices (original sample numbering); the
        counts by the C kernel of sorted_rows.py when built (one pass, no renumbered copy of idx)."""
        W = sorted_counts(idx, self.inv)
        return self.stats(counts_from_indices(self.inv[idx], self.n) if W is None else W)

    def stats(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Every key for each row of the (b, n) count matrix W, whose columns follow self.order."""
        weighted = [k for k in self.keys if METRICS.get(k).resample == "weights"]
        out = evaluate(self.sample_stats, weighted, W)
        out.update({k: self.explicit(k, W) for k in self.keys if k not in out})
        return {k: out[k] for k in self.keys}

    def jackknife(self, groups: int = JACKKNIFE_GROUPS) -> dict[str, np.ndarray]:
        """Jackknife influence values u_g = (J - 1) / J (mean_h theta_(h) - theta_(g)) of every key,
        theta_(g) the metric without group g: J = n single samples when n <= groups (leave-one-out),
        else `groups` parts of np.random.default_rng(0).permutation(n). Count rows with zeros on the
        left-out samples through stats(W), in blocks."""
        order = np.arange(self.n) if self.n <= groups else np.random.default_rng(0).permutation(self.n)
        parts = np.array_split(order, min(groups, self.n))
        values: dict[str, list] = {k: [] for k in self.keys}
        step = block_rows(self.n)
        for start in range(0, len(parts), step):
            block = parts[start:start + step]
            W = np.ones((len(block), self.n))
            for row, part in enumerate(block):
                W[row, self.inv[part]] = 0.0
            for k, v in self.stats(W).items():
                values[k].append(v)
        J = len(parts)
        out = {}
        for k, v in values.items():
            theta = np.concatenate(v)
            out[k] = (J - 1) / J * (theta.mean() - theta)
        return out

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


def coverage_note(kind: str | None) -> str:
    """The footnote line saying how the shown interval kind covered in the coverage study."""
    if kind is None:
        return "intervals: none (bootstrap B = 0)"
    cov = STUDY_COVERAGE.get(kind)
    said = f"covered the true calibration error in {100 * cov:.1f}% of simulations" if cov is not None else "coverage not measured"
    return (f"{kind} intervals: nominal 95%, {said} (benchmarks/bench_intervals.py, docs/metrics.md); "
            "calibration errors are biased upward, so an interval may lie above the point estimate")


def check_interval(kind: str) -> str:
    if kind not in INTERVALS:
        raise InputError(f"unknown interval '{kind}'; valid: {', '.join(INTERVALS)}")
    return kind


def acceleration(influence: np.ndarray) -> float:
    """BCa acceleration a = sum u^3 / (6 (sum u^2)^1.5) (Efron & Tibshirani 1993, eq. 14.15); 0 when
    every influence value is 0."""
    u = np.asarray(influence, dtype=np.float64)
    ss = float(np.sum(u * u))
    return 0.0 if ss <= 0 else float(np.sum(u ** 3) / (6.0 * ss ** 1.5))


def bca_levels(samples: np.ndarray, point: float, ci: float, accel: float) -> tuple[float, float]:
    """The BCa quantile levels (Efron & Tibshirani 1993, eq. 14.10): z0 from the share of samples below
    the point (ties counted half, kept within [1/2B, 1 - 1/2B] so z0 stays finite)."""
    from scipy.special import ndtr, ndtri  # only bca needs the normal quantiles

    B = samples.shape[0]
    share = (np.count_nonzero(samples < point) + 0.5 * np.count_nonzero(samples == point)) / B
    z0 = ndtri(min(max(share, 0.5 / B), 1 - 0.5 / B))
    levels = []
    for z in (ndtri((1 - ci) / 2), ndtri((1 + ci) / 2)):
        denom = 1.0 - accel * (z0 + z)
        levels.append(ndtr(z0 + (z0 + z) / denom) if denom > 0 else (0.0 if z < 0 else 1.0))
    return levels[0], levels[1]


def interval(samples: np.ndarray, point: float, ci: float, kind: str = DEFAULT_INTERVAL,
             influence: np.ndarray | None = None) -> tuple[float, float]:
    """The `kind` interval (module docstring) of one statistic from its bootstrap samples; "bca"
    needs the jackknife influence values."""
    samples = np.asarray(samples, dtype=np.float64)
    if kind == "percentile":
        lo, hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)])
    elif kind == "basic":
        q_lo, q_hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)])
        lo, hi = 2 * point - q_hi, 2 * point - q_lo
    elif kind == "bca":
        a_lo, a_hi = bca_levels(samples, point, ci, acceleration(influence))
        lo, hi = np.percentile(samples, [100 * a_lo, 100 * a_hi])
    else:
        raise InputError(f"unknown interval '{kind}'; valid: {', '.join(INTERVALS)}")
    return float(lo), float(hi)


def intervals_of(samples: dict, point: dict, ci: float, kind: str, influence: dict | None = None) -> dict:
    """{key: (lo, hi)} of every key."""
    return {k: interval(samples[k], point[k], ci, kind, None if influence is None else influence[k])
            for k in samples}


def _check(B: int, ci: float, kind: str = DEFAULT_INTERVAL, workers: int = 1) -> None:
    check_interval(kind)
    if int(B) < 1:
        raise InputError(f"bootstrap B must be a positive integer, got {B}")
    if int(workers) < 1:
        raise InputError(f"workers must be a positive integer, got {workers}")
    if not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), got {ci}")


def _block_stats(resamplers, idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [rs.stats_of_indices(idx) for rs in resamplers]


def _claimed_stats(blocks, position: int, count: int, take, resamplers) -> list[tuple[int, list]]:
    """(j, statistics) of each block j this process claims: take() hands out every block number once
    across the processes, each process's in increasing order, so a process never needs a block its
    generator has passed. `blocks` yields block `position` next; the blocks others claimed are drawn
    and dropped (the generator's stream cannot skip)."""
    out, want = [], take()
    for j in range(position, count):
        if want >= count:
            break
        idx = next(blocks)
        if j == want:
            out.append((j, _block_stats(resamplers, idx)))
            want = take()
    return out


def _samples(resamplers, n: int, B: int, seed: int, workers: int = 1) -> list[dict[str, np.ndarray]]:
    """Every key's (B,) bootstrap samples of each resampler. Block 0 runs here first: it builds the
    structures every block reuses (stats.cache), so that with workers > 1 the processes forked after
    it (forked.py) share them instead of each building its own. The other blocks are claimed one at
    a time by whichever process is free (a process that gets less CPU on a loaded machine takes
    fewer). Each block's statistics depend only on its indices, so the samples are the same
    whatever the worker count and whoever computed which block (tested)."""
    blocks = _index_blocks(n, B, seed)
    per_block = {0: _block_stats(resamplers, next(blocks))}
    count = len(block_sizes(n, B))
    processes = max(1, min(workers, count - 1))
    take = Claims(1, shared=processes > 1)
    tasks = [functools.partial(_claimed_stats, blocks, 1, count, take, resamplers) for _ in range(processes)]
    for part in run_forked(tasks):
        per_block.update(part)
    ordered = [per_block[j] for j in range(count)]
    return [{k: np.concatenate([block[r][k] for block in ordered]) for k in ordered[0][r]}
            for r in range(len(resamplers))]


def bootstrap_metrics(labels, *, logits=None, probs=None, B: int = 1000, seed: int = 0, ci: float = 0.95,
                      keys=None, bins: int = 15, ignore_index: int | None = None, class_counts=None,
                      shot_thresholds=None, interval: str = DEFAULT_INTERVAL, workers: int = 1) -> dict:
    """Point estimates, `interval` intervals (percentile, basic or bca) and the (B,) bootstrap samples
    of every metric, all from the resampled indices bootstrap_indices(n, B, seed). workers > 1 splits
    the resample blocks over that many processes (forked.py; Linux): the same numbers, sooner.

    Returns {"point": {k: v}, "ci": {k: (lo, hi)}, "samples": {k: (B,)}, "interval": kind, "B": B}.
    """
    _check(B, ci, interval, workers)
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index)
    keys = resolve_keys(keys, prep.segmentation)
    check_bins(bins)
    rs = Resampler(prep, int(bins), keys, class_counts, shot_thresholds)
    (samples,) = _samples([rs], prep.n, int(B), seed, int(workers))
    influence = rs.jackknife() if interval == "bca" else None
    return {"point": rs.point, "ci": intervals_of(samples, rs.point, ci, interval, influence),
            "samples": samples, "interval": interval, "B": int(B)}


def paired_bootstrap(labels, *, logits_a=None, probs_a=None, logits_b=None, probs_b=None, B: int = 1000,
                     seed: int = 0, ci: float = 0.95, keys=None, bins: int = 15,
                     ignore_index: int | None = None, interval: str = DEFAULT_INTERVAL, class_counts=None,
                     shot_thresholds=None, workers: int = 1) -> dict:
    """Paired difference a - b of two prediction sets on the same samples, both resampled with the
    same indices (and, for bca, jackknifed with the same groups). Returns {"point": {k: a - b},
    "ci": {k: (lo, hi)}, "samples": {k: (B,)}, "a": {k: v}, "b": {k: v}, "interval", "B"}.
    class_counts / shot_thresholds (the train counts both sets' models share) serve the long-tail keys;
    workers as in bootstrap_metrics."""
    _check(B, ci, interval, workers)
    pa = prepare(labels, logits=logits_a, probs=probs_a, ignore_index=ignore_index)
    pb = prepare(labels, logits=logits_b, probs=probs_b, ignore_index=ignore_index)
    if pa.scores.shape != pb.scores.shape:
        raise InputError(f"shape mismatch: prediction sets a {pa.scores.shape} and b {pb.scores.shape}")
    keys = resolve_keys(keys, pa.segmentation)
    check_bins(bins)
    ra = Resampler(pa, int(bins), keys, class_counts, shot_thresholds)
    rb = Resampler(pb, int(bins), keys, class_counts, shot_thresholds)
    a, b = ra.point, rb.point
    sa, sb = _samples([ra, rb], pa.n, int(B), seed, int(workers))
    diff = {k: sa[k] - sb[k] for k in keys}
    point = {k: a[k] - b[k] for k in keys}
    influence = None
    if interval == "bca":
        ja, jb = ra.jackknife(), rb.jackknife()
        influence = {k: ja[k] - jb[k] for k in keys}
    return {"point": point, "ci": intervals_of(diff, point, ci, interval, influence), "samples": diff,
            "a": a, "b": b, "interval": interval, "B": int(B)}


def prepare_runs(runs, ignore_index: int | None = None) -> list[Prepared]:
    """Prepared predictions of each run mapping ("labels" and "logits" or "probs"); InputError naming the run."""
    preps = []
    for i, run in enumerate(runs):
        try:
            preps.append(prepare(run.get("labels"), logits=run.get("logits"), probs=run.get("probs"),
                                 ignore_index=ignore_index))
        except InputError as err:
            raise InputError(f"run {i}: {err}") from None
    if not preps:
        raise InputError("seed_bootstrap needs at least one run")
    return preps


def add_copies(sums: dict, stats_of_indices, drawn: np.ndarray, s: int, n: int, rng) -> None:
    """Add, for every drawn copy of run s (in (b, copy) order), that copy's statistics to its
    resample's sums; the copies' sample indices come from rng in blocks (seed_bootstrap's stream)."""
    S = drawn.shape[1]
    owner = np.nonzero(drawn.ravel() == s)[0] // S
    step = block_rows(n)
    for start in range(0, owner.shape[0], step):
        chunk = owner[start:start + step]
        stats = stats_of_indices(rng.integers(0, n, (chunk.shape[0], n)))
        for k in sums:
            np.add.at(sums[k], chunk, stats[k])


def pooled_influence(per_run: list[dict], jackknives: list[dict], keys) -> dict:
    """Two-level influence values (module docstring): seed-level (theta_s - mean) / S and every run's
    sample-level jackknife values / S, pooled per key."""
    S = len(per_run)
    out = {}
    for k in keys:
        theta = np.array([p[k] for p in per_run])
        out[k] = np.concatenate([(theta - theta.mean()) / S] + [j[k] / S for j in jackknives])
    return out


def seed_bootstrap(runs, *, B: int = 1000, seed: int = 0, ci: float = 0.95, keys=None, bins: int = 15,
                   ignore_index: int | None = None, interval: str = DEFAULT_INTERVAL) -> dict:
    """Two-level bootstrap across training seeds (docs/metrics.md): the point estimate is the mean over
    runs; resample b draws S runs with replacement, each drawn copy gets its own resample of that
    run's test samples, and the statistic is the mean over the S copies.

    runs: a sequence of mappings with "labels" and "logits" or "probs" (one per seed), and optionally
    "class_counts" / "shot_thresholds" (that run's train counts, for the long-tail keys).
    Generator stream, so that a report is reproducible: rng = default_rng(seed); first the drawn
    runs rng.integers(0, S, (B, S)); then, run by run, the test-sample indices of all its copies
    in (b, copy) order, rng.integers(0, n_s, (copies, n_s)) in blocks.
    Returns {"point", "ci", "samples", "interval", "B"} like bootstrap_metrics, plus "per_run": [point dicts].
    """
    _check(B, ci, interval)
    check_bins(bins)
    runs = list(runs)
    preps = prepare_runs(runs, ignore_index)
    keys = resolve_keys(keys, preps[0].segmentation)
    S, B = len(preps), int(B)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in keys}
    per_run, jackknives = [], []
    for s, prep in enumerate(preps):
        rs = Resampler(prep, int(bins), keys, runs[s].get("class_counts"), runs[s].get("shot_thresholds"))
        per_run.append(rs.point)
        add_copies(sums, rs.stats_of_indices, drawn, s, prep.n, rng)
        if interval == "bca":
            jackknives.append(rs.jackknife())
    samples = {k: v / S for k, v in sums.items()}
    point = {k: float(np.mean([p[k] for p in per_run])) for k in keys}
    influence = pooled_influence(per_run, jackknives, keys) if interval == "bca" else None
    return {"point": point, "ci": intervals_of(samples, point, ci, interval, influence), "samples": samples,
            "per_run": per_run, "interval": interval, "B": B}
