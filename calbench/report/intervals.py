"""Intervals of table cells (docs/metrics.md): bootstrap over test samples for one seed, the two-level
bootstrap (seeds, then samples) for several, and paired differences against a reference method.

All resampling goes through calbench.metrics (bootstrap_metrics, seed_bootstrap, paired_bootstrap);
every interval is of the kind `interval` names (percentile, basic or bca: calbench.metrics.bootstrap);
the paired two-level case, which calbench.metrics does not offer, is built here on its Resampler so
that a method and its reference are evaluated on the same drawn seeds and the same sample indices.
Predictions are {"labels", "logits"} or, after a calibrator that outputs probabilities,
{"labels", "probs"}; every metric takes either (`scores_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calbench.metrics import bootstrap_metrics, compute_metrics, paired_bootstrap, seed_bootstrap
from calbench.metrics.bootstrap import DEFAULT_INTERVAL, intervals_of, pooled_influence
from calbench.report.pool import map_jobs
from calbench.report.tidy import PosthocSpec, Results, Run, load_predictions


def long_tail_options(pred: dict, keys) -> dict:
    """{"class_counts", "shot_thresholds"} for the metrics' long-tail keys when the prediction carries
    its run's train class counts (calbench.report.tidy.long_tail_inputs), else {}. The thresholds are
    the ones the run saved (calbench.report.tidy.long_tail_inputs) or, for a store written before
    they were saved, the dataset's own (its registry entry's `shot_thresholds`: digits-lt uses
    "terciles"; None: OLTR's >100 / 20-100 / <20), looked up only when a requested key needs the shot
    groups, since that reads the dataset registry (and imports torch)."""
    if "class_counts" not in pred:
        return {}
    from calbench.metrics import METRICS

    if not any("shots" in METRICS.get(k).needs for k in keys if k in METRICS):
        return {}
    if "shot_thresholds" in pred:
        return {"class_counts": pred["class_counts"], "shot_thresholds": pred["shot_thresholds"]}
    return {"class_counts": pred["class_counts"], "shot_thresholds": dataset_shot_thresholds(pred.get("dataset"))}


def dataset_shot_thresholds(dataset: str | None):
    """The registered dataset's shot thresholds (None: OLTR's, or an unknown / unregistered name)."""
    if dataset is None:
        return None
    from calbench.data import DATASETS

    return DATASETS.entry(dataset).meta.get("shot_thresholds") if dataset in DATASETS else None


def scores_of(pred: dict, suffix: str = "") -> dict:
    """{"logits<suffix>": ...} or {"probs<suffix>": ...}: the keyword calbench.metrics takes them under."""
    kind = "logits" if "logits" in pred else "probs"
    return {kind + suffix: pred[kind]}


@dataclass
class Estimate:
    """Point estimate (mean over runs) and interval of each metric (kind `interval`, from B resamples);
    ci is None when B = 0."""

    point: dict[str, float]
    ci: dict[str, tuple[float, float]] | None
    n_runs: int
    seeds: list[int] = field(default_factory=list)
    per_run: list[dict] = field(default_factory=list)
    interval: str = DEFAULT_INTERVAL
    B: int = 0


@dataclass
class Cell:
    """One table cell group: a method on one (dataset, backbone); diff is the paired difference to the
    reference method (None without --reference or when no seed is shared)."""

    estimate: Estimate
    diff: Estimate | None = None

    def significant(self, key: str) -> bool:
        """True when the difference interval to the reference excludes 0."""
        if self.diff is None or self.diff.ci is None:
            return False
        lo, hi = self.diff.ci[key]
        return lo > 0 or hi < 0


def estimate_runs(preds: list[dict], *, keys, B: int = 1000, seed: int = 0, ci: float = 0.95,
                  bins: int = 15, interval: str = DEFAULT_INTERVAL) -> Estimate:
    """Mean over runs with a sample-level (one run) or two-level (several runs) bootstrap interval."""
    keys = tuple(keys)
    if B <= 0:
        per_run = [compute_metrics(p["labels"], **scores_of(p), bins=bins, keys=keys, **long_tail_options(p, keys))
                   for p in preds]
        point = {k: float(np.mean([r[k] for r in per_run])) for k in keys}
        return Estimate(point, None, len(preds), per_run=per_run, interval=interval)
    if len(preds) == 1:
        out = bootstrap_metrics(preds[0]["labels"], **scores_of(preds[0]), B=B, seed=seed, ci=ci, keys=keys,
                                bins=bins, interval=interval, **long_tail_options(preds[0], keys))
        return Estimate(dict(out["point"]), dict(out["ci"]), 1, per_run=[dict(out["point"])], interval=interval,
                        B=B)
    runs = [p | long_tail_options(p, keys) for p in preds]
    out = seed_bootstrap(runs, B=B, seed=seed, ci=ci, keys=keys, bins=bins, interval=interval)
    return Estimate(dict(out["point"]), dict(out["ci"]), len(preds), per_run=list(out["per_run"]),
                    interval=interval, B=B)


def paired_seed_bootstrap(pairs: list[tuple[dict, dict]], *, keys, B: int = 1000, seed: int = 0,
                          ci: float = 0.95, bins: int = 15, interval: str = DEFAULT_INTERVAL) -> Estimate:
    """Two-level paired bootstrap of a - b: pairs are (a, b) predictions of the same seed on the same
    test samples. Seeds are drawn as in seed_bootstrap (rng.integers(0, S, (B, S))); each drawn copy gets
    one resample of sample indices used for both a and b. Point: mean over pairs of a - b. bca: the
    pooled influence values of seed_bootstrap, of the differences."""
    from calbench.metrics.bootstrap import Resampler, add_copies
    from calbench.metrics.core import resolve_keys
    from calbench.metrics.inputs import prepare

    keys = resolve_keys(tuple(keys), False)
    S = len(pairs)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in keys}
    per_pair, jackknives = [], []
    for s, (a, b) in enumerate(pairs):
        ra = Resampler(prepare(a["labels"], **scores_of(a)), int(bins), keys, **long_tail_options(a, keys))
        rb = Resampler(prepare(b["labels"], **scores_of(b)), int(bins), keys, **long_tail_options(b, keys))
        per_pair.append({k: ra.point[k] - rb.point[k] for k in keys})

        def diff_of(idx, ra=ra, rb=rb):
            sa, sb = ra.stats_of_indices(idx), rb.stats_of_indices(idx)
            return {k: sa[k] - sb[k] for k in keys}

        add_copies(sums, diff_of, drawn, s, ra.n, rng)
        if interval == "bca":
            ja, jb = ra.jackknife(), rb.jackknife()
            jackknives.append({k: ja[k] - jb[k] for k in keys})
    samples = {k: v / S for k, v in sums.items()}
    point = {k: float(np.mean([p[k] for p in per_pair])) for k in keys}
    influence = pooled_influence(per_pair, jackknives, keys) if interval == "bca" else None
    return Estimate(point, intervals_of(samples, point, ci, interval, influence), S, per_run=per_pair,
                    interval=interval, B=B)


def paired_difference(a: list[tuple[int, dict]], b: list[tuple[int, dict]], *, keys, B: int = 1000,
                      seed: int = 0, ci: float = 0.95, bins: int = 15,
                      interval: str = DEFAULT_INTERVAL) -> Estimate | None:
    """Difference a - b over the seeds both have, paired on the same test samples (labels must match).
    None when no seed is shared or the test labels differ."""
    bmap = dict(b)
    pairs = [(pa, bmap[s]) for s, pa in a if s in bmap and np.array_equal(pa["labels"], bmap[s]["labels"])]
    seeds = [s for s, pa in a if s in bmap and np.array_equal(pa["labels"], bmap[s]["labels"])]
    if not pairs:
        return None
    keys = tuple(keys)
    if B <= 0:
        per = []
        for pa, pb in pairs:
            ma = compute_metrics(pa["labels"], **scores_of(pa), bins=bins, keys=keys, **long_tail_options(pa, keys))
            mb = compute_metrics(pb["labels"], **scores_of(pb), bins=bins, keys=keys, **long_tail_options(pb, keys))
            per.append({k: ma[k] - mb[k] for k in keys})
        return Estimate({k: float(np.mean([p[k] for p in per])) for k in keys}, None, len(per), seeds, per,
                        interval=interval)
    if len(pairs) == 1:
        pa, pb = pairs[0]
        out = paired_bootstrap(pa["labels"], **scores_of(pa, "_a"), **scores_of(pb, "_b"), B=B, seed=seed, ci=ci,
                               keys=keys, bins=bins, interval=interval, **long_tail_options(pa, keys))
        return Estimate(dict(out["point"]), dict(out["ci"]), 1, seeds, [dict(out["point"])], interval=interval, B=B)
    est = paired_seed_bootstrap(pairs, keys=keys, B=B, seed=seed, ci=ci, bins=bins, interval=interval)
    est.seeds = seeds
    return est


def cell_runs(results: Results) -> dict[tuple[str, tuple[str, str]], list[Run]]:
    """Done runs per (method label, (dataset, backbone)), sorted by seed."""
    cells: dict = {}
    for r in results.done:
        cells.setdefault((r.method_label, r.group), []).append(r)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in cells.items()}


def compute_cells(results: Results, *, keys, posthoc: str | PosthocSpec | None = None, B: int = 1000,
                  seed: int = 0, ci: float = 0.95, bins: int = 15, reference: str | None = None,
                  interval: str = DEFAULT_INTERVAL) -> dict:
    """{(method label, (dataset, backbone)): Cell} for every cell with at least one done run.

    posthoc: a calibrator (name, "name:key=value" or PosthocSpec) refitted on each run's validation
    predictions and applied to its test predictions (calbench.report.tidy.calibrated_predictions);
    None: the raw test predictions.
    reference: a method label (or registry name) whose paired difference every other cell gets.
    Cells are independent, so their bootstraps run in worker processes when worth it (report/pool.py;
    the same numbers either way)."""
    keys = tuple(keys)
    preds = {key: [(r.seed, load_predictions(r, "test", posthoc)) for r in runs]
             for key, runs in cell_runs(results).items()}
    options = dict(keys=keys, B=B, seed=seed, ci=ci, bins=bins, interval=interval)
    jobs, costs, places = [], [], []
    for key, seeded in preds.items():
        jobs.append(((_cell_estimate, seeded), options))
        costs.append(_cost(seeded, B, keys))
        places.append((key, "estimate"))
    ref_label = resolve_reference(results, reference) if reference is not None else None
    for (label, group), seeded in preds.items():
        ref = preds.get((ref_label, group))
        if ref is not None and label != ref_label:
            jobs.append(((paired_difference, seeded, ref), options))
            costs.append(2 * _cost(seeded, B, keys))
            places.append(((label, group), "diff"))
    done = map_jobs(_call, jobs, costs)
    cells = {key: Cell(value) for (key, what), value in zip(places, done) if what == "estimate"}
    for (key, what), value in zip(places, done):
        if what == "diff":
            cells[key].diff = value
    return cells


def _call(fn, *args, **kwargs):
    """fn(*args, **kwargs): lets map_jobs carry the function of each job with its arguments."""
    return fn(*args, **kwargs)


def _cell_estimate(seeded: list[tuple[int, dict]], **options) -> Estimate:
    """estimate_runs of one cell's (seed, predictions), its seeds recorded."""
    est = estimate_runs([p for _, p in seeded], **options)
    est.seeds = [s for s, _ in seeded]
    return est


def _cost(seeded: list[tuple[int, dict]], B: int, keys) -> float:
    """Sample x resample x metric evaluations of one cell's bootstrap (map_jobs' load estimate)."""
    return float(sum(len(p["labels"]) for _, p in seeded)) * max(B, 1) * len(keys)


def resolve_reference(results: Results, reference: str) -> str:
    """The method label a --reference names: a label, or a registry name with exactly one label."""
    from calbench.errors import InputError
    from calbench.registry import did_you_mean

    labels = results.methods()
    if reference in labels:
        return reference
    by_name = sorted({r.method_label for r in results.runs if r.method == reference})
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise InputError(f"--reference '{reference}' is ambiguous; one of: {', '.join(by_name)}")
    raise InputError(f"unknown reference method '{reference}'{did_you_mean(reference, labels)}; "
                     f"valid: {', '.join(labels)}")
