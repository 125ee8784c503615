"""`calbench report --split shift | ood | <set id>`: calibration under shift and OOD detection,
recomputed from every run's saved evaluation predictions (`<run>/eval/<set id>.npz`).

Shift (uncertainty-baselines' convention, Ovadia et al., NeurIPS 2019): per run, cA / cECE / cNLL at
severity s = the mean over corruptions of acc / ECE / NLL at that severity; "all" = the mean over every
(corruption, severity >= 1) set. One set id (`shift:gaussian_noise:3`) shows every default metric of
that set. Post-hoc rows (calibration `ts`, ...) apply the calibrator fitted on the run's CLEAN
validation logits to each shifted set. Cells are means over seeds.

Intervals are two-level, as the i.i.d. tables' (calbench.metrics.bootstrap.seed_bootstrap): each
resample draws the seeds with replacement, then, for every drawn copy, one resample of test-sample
indices shared by all of that seed's sets of the same size (corruptions of one test set: the same
images), and takes the mean over copies of the mean over corruptions. The i.i.d. machinery does the
work: each set's `Resampler` (or `RowResampler` for compact storage), `add_copies` for the generator
stream, `intervals_of` for the percentile interval. A metric that compact storage cannot recompute
(class-wise ones) shows its exact point value from evaluation time and no interval.

OOD: AUROC / FPR95 (calbench.metrics.ood) of the clean test set (in) against each OOD set, per score,
raw and after each calibrator (applied to both sets); seed-level percentile intervals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calbench.errors import InputError
from calbench.report.tidy import Results

EVAL_DIR = "eval"
SHIFT_KEYS = {"acc": "cA", "ece": "cECE", "nll": "cNLL"}
OOD_KEYS = ("auroc", "fpr95")
NO_INTERVAL = "no interval: compact storage"
COLUMNS = ["method", "calibration", "score", "dataset", "backbone", "set", "severity", "metric", "seeds",
           "mean", "lo", "hi", "note"]


def _records(run_dir: Path):
    """(record json, npz path) of every evaluated set of a run, in name order."""
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("*.json")):
        if path.name == "index.json":
            continue
        yield json.loads(path.read_text()), path.with_suffix(".npz")


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def storage_of(record: dict) -> str:
    return "compact" if record.get("storage") == "compact" else "full"


def _clean(run) -> dict[str, np.ndarray]:
    with np.load(Path(run.run_dir) / "predictions.npz", allow_pickle=False) as data:
        return {k: data[k] for k in ("val_logits", "val_labels", "test_logits")}


@dataclass
class SetPrediction:
    """One calibration of one saved shift set of one run: the predictions (full) or rows (compact),
    and, for compact storage, the exact point values stored at evaluation time."""

    id: str
    family: str
    severity: int | None
    n: int
    num_classes: int
    pred: dict | None = None            # {"labels", "logits" | "probs"}
    rows: dict | None = None            # calbench.shift.storage.stored_rows
    points: dict = field(default_factory=dict)

    def supports(self, key: str) -> bool:
        from calbench.shift.storage import row_supported

        return self.rows is None or row_supported(key)

    def resampler(self, keys: tuple[str, ...], bins: int):
        from calbench.metrics.bootstrap import Resampler
        from calbench.metrics.inputs import prepare
        from calbench.shift.storage import RowResampler

        if self.rows is not None:
            return RowResampler(self.rows, self.num_classes, bins, keys)
        kind = "logits" if "logits" in self.pred else "probs"
        return Resampler(prepare(self.pred["labels"], **{kind: self.pred[kind]}), bins, keys)


def _set_predictions(record: dict, data: dict, calibrators: dict, num_classes: int) -> dict[str, SetPrediction]:
    """{calibration: SetPrediction} of one saved shift set; compact sets offer the calibrations stored."""
    from calbench.shift.storage import calibrated_sets, calibrations_of, stored_rows

    labels = data["labels"].astype(np.int64)
    base = dict(id=record["id"], family=record["family"], severity=record["severity"], n=int(labels.shape[0]))
    if storage_of(record) == "full":
        sets = calibrated_sets(data["logits"].astype(np.float64), calibrators, num_classes)
        return {c: SetPrediction(**base, num_classes=scores.shape[1], pred={"labels": labels, kind: scores})
                for c, (scores, kind) in sets.items()}
    stored, out = calibrations_of(data), {}
    for c in ["none", *calibrators]:
        if c in stored:
            points = record["metrics"].get("test" if c == "none" else f"test_{c}", {})
            out[c] = SetPrediction(**base, num_classes=int(record.get("num_classes", num_classes)),
                                   rows=stored_rows(data, c), points=points)
    return out


def _run_shift_sets(run, posthoc, only: str | None) -> dict[str, list[SetPrediction]]:
    """{calibration: [SetPrediction]} of one run's shift sets (one set when `only` is an id)."""
    from calbench.posthoc import fit_calibrator

    clean, out = _clean(run), defaultdict(list)
    calibrators = {name: fit_calibrator(name, clean["val_logits"].astype(np.float64), clean["val_labels"])
                   for name in posthoc}
    for record, npz in _records(run.run_dir):
        if record["kind"] != "shift" or (only and record["id"] != only) or (not only and not record["severity"]):
            continue
        for calibration, pred in _set_predictions(record, _load(npz), calibrators,
                                                  clean["val_logits"].shape[1]).items():
            out[calibration].append(pred)
    return out


def _groups(sets: list[SetPrediction], only: str | None) -> dict[str, list[int]]:
    """{aggregate ("1".."5", "all"; or the one set's severity): indices into sets}."""
    if only:
        return {str(sets[0].severity or ""): [0]} if sets else {}
    groups = defaultdict(list)
    for i, s in enumerate(sets):
        groups[str(int(s.severity))].append(i)
    groups = dict(sorted(groups.items(), key=lambda kv: int(kv[0])))
    return {**groups, "all": list(range(len(sets)))} if sets else {}


def _point(s: SetPrediction, rs, key: str) -> float:
    return float(rs.point[key]) if rs is not None and key in rs.point else float(s.points.get(key, np.nan))


def _run_points(sets, resamplers, groups, keys) -> dict[tuple[str, str], float]:
    """{(aggregate, key): the run's mean over the aggregate's sets}."""
    return {(agg, k): float(np.mean([_point(sets[i], resamplers[i], k) for i in idx]))
            for agg, idx in groups.items() for k in keys}


def _add_run_copies(sums, s: int, sets, resamplers, groups, drawn, rng) -> None:
    """Every drawn copy of run s: per size n, one index resample shared by the run's sets of that size
    (calbench.metrics.bootstrap.add_copies draws it), each set's statistics added to the means of the
    aggregates it belongs to."""
    from calbench.metrics.bootstrap import add_copies, counts_from_indices

    member = defaultdict(list)
    for agg, idx in groups.items():
        for i in idx:
            member[i].append(agg)
    boot = sorted({k for _, k in sums})
    for n in sorted({sets[i].n for i in member}):
        same = [i for i in member if sets[i].n == n]

        def stats_of_indices(idx, same=same, n=n):
            out = {key: np.zeros(idx.shape[0]) for key in sums}
            counts = counts_from_indices(idx, n)      # once for every set: each reads it in its own order
            for i in same:
                values = resamplers[i].stats(counts[:, resamplers[i].order])
                for agg in member[i]:
                    for k in boot:
                        out[(agg, k)] += values[k] / len(groups[agg])
            return out

        add_copies(sums, stats_of_indices, drawn, s, n, rng)


def two_level(runs: list[list[SetPrediction]], keys, *, only: str | None, B: int, ci: float, seed: int,
              bins: int = 15, interval: str = "percentile") -> dict[tuple[str, str], tuple[float, float, float, str]]:
    """{(aggregate, key): (mean over runs, lo, hi, note)} of one cell: the two-level interval (`interval`:
    percentile or basic, see split_text)
    (module docstring) for every key all its sets can recompute; the mean of stored points and
    NO_INTERVAL for the others (compact storage)."""
    from calbench.metrics.bootstrap import intervals_of

    per_run_groups = [_groups(sets, only) for sets in runs]
    aggs = [a for a in per_run_groups[0] if all(a in g for g in per_run_groups)]
    boot = [k for k in keys if all(s.supports(k) for sets in runs for s in sets)]
    resamplers = [[s.resampler(tuple(boot), bins) if boot else None for s in sets] for sets in runs]
    groups = [{a: g[a] for a in aggs} for g in per_run_groups]
    points = [_run_points(sets, rs, g, keys) for sets, rs, g in zip(runs, resamplers, groups)]
    mean = {key: float(np.mean([p[key] for p in points])) for key in points[0]}
    out = {key: (value, float("nan"), float("nan"), "" if key[1] in boot else NO_INTERVAL)
           for key, value in mean.items()}
    if B <= 0 or not boot:
        return out
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(runs), (B, len(runs)))
    sums = {(a, k): np.zeros(B) for a in aggs for k in boot}
    for s, sets in enumerate(runs):
        _add_run_copies(sums, s, sets, resamplers[s], groups[s], drawn, rng)
    samples = {key: v / len(runs) for key, v in sums.items()}
    for key, (lo, hi) in intervals_of(samples, {key: mean[key] for key in sums}, ci, interval).items():
        out[key] = (mean[key], lo, hi, "")
    return out


def _shift_table(results: Results, split: str, posthoc, B: int, ci: float, seed: int,
                 interval: str = "percentile") -> list[dict]:
    from calbench.metrics import default_keys

    only = split if split.startswith("shift:") else None
    keys = tuple(default_keys()) if only else tuple(SHIFT_KEYS)
    cells = defaultdict(list)
    for run in results.runs:
        if not run.done:
            continue
        for calibration, sets in _run_shift_sets(run, tuple(posthoc), only).items():
            if sets:
                cells[(run.order.get("method", 0), run.method_label, calibration, run.dataset, run.backbone)].append(sets)
    rows = []
    for (order, method, calibration, dataset, backbone), runs in cells.items():
        name = runs[0][0].family if only else "corruptions"
        for (agg, key), (mean, lo, hi, note) in two_level(runs, keys, only=only, B=B, ci=ci, seed=seed,
                                                             interval=interval).items():
            rows.append({"order": order, "method": method, "calibration": calibration, "score": "",
                         "dataset": dataset, "backbone": backbone, "set": name, "severity": agg, "metric": key,
                         "seeds": len(runs), "mean": mean, "lo": lo, "hi": hi, "note": note})
    return rows


def _ood_out_scores(record: dict, data: dict, calibrators: dict, num_classes: int) -> dict[str, dict]:
    """{calibration: {score: (n,)}} of one saved OOD set."""
    from calbench.shift.storage import calibrated_sets, calibrations_of, score_rows, stored_scores

    if storage_of(record) == "full":
        sets = calibrated_sets(data["logits"].astype(np.float64), calibrators, num_classes)
        return {c: score_rows(*pair) for c, pair in sets.items()}
    stored = calibrations_of(data)
    return {c: stored_scores(data, c) for c in ["none", *calibrators] if c in stored}


def _run_ood_rows(run, posthoc, only: str | None) -> list[dict]:
    """Per (calibration, score, set, metric) values of one run: the clean test set against each OOD set."""
    from calbench.metrics.ood import ood_metrics
    from calbench.posthoc import fit_calibrator
    from calbench.shift.storage import calibrated_sets, score_rows

    clean, rows = _clean(run), []
    calibrators = {name: fit_calibrator(name, clean["val_logits"].astype(np.float64), clean["val_labels"])
                   for name in posthoc}
    k = clean["test_logits"].shape[1]
    ins = {c: score_rows(*pair) for c, pair in calibrated_sets(clean["test_logits"], calibrators, k).items()}
    for record, npz in _records(run.run_dir):
        if record["kind"] != "ood" or (only and record["id"] != only):
            continue
        for calibration, outs in _ood_out_scores(record, _load(npz), calibrators, k).items():
            for score, out in outs.items():
                for key, value in ood_metrics(ins[calibration][score], out, keys=OOD_KEYS).items():
                    rows.append({"calibration": calibration, "score": score, "set": record["family"],
                                 "metric": key, "value": float(value)})
    return rows


def _interval(values: np.ndarray, B: int, ci: float, seed: int, kind: str = "percentile") -> tuple[float, float]:
    """Seed-level bootstrap interval of the mean of `values` (one per seed), percentile or basic."""
    from calbench.metrics.bootstrap import interval

    if len(values) < 2 or B == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (B, len(values)))].mean(axis=1)
    return tuple(float(q) for q in interval(means, float(values.mean()), ci, kind, None))


def _ood_table(results: Results, split: str, posthoc, B: int, ci: float, seed: int,
               interval: str = "percentile") -> list[dict]:
    """Seed-level intervals (percentile or basic) of each OOD metric (one value per seed)."""
    only = split if split.startswith("ood:") else None
    found = []
    for run in results.runs:
        if run.done:
            found += [{"order": run.order.get("method", 0), "method": run.method_label, "dataset": run.dataset,
                       "backbone": run.backbone, **row} for row in _run_ood_rows(run, tuple(posthoc), only)]
    if not found:
        return []
    keys = ["order", "method", "calibration", "score", "dataset", "backbone", "set", "metric"]
    rows = []
    for key, group in pd.DataFrame(found).groupby(keys, sort=False):
        values = group["value"].to_numpy(dtype=float)
        lo, hi = _interval(values, B, ci, seed, interval)
        rows.append({**dict(zip(keys, key)), "severity": "", "seeds": len(values), "mean": float(values.mean()),
                     "lo": lo, "hi": hi, "note": ""})
    return rows


def split_table(results: Results, split: str, *, posthoc=("ts",), B: int = 1000, ci: float = 0.95,
                seed: int = 0, interval: str = "percentile") -> pd.DataFrame:
    """The aggregated table of COLUMNS (see the module docstring for the conventions)."""
    ood = split == "ood" or split.startswith("ood:")
    rows = (_ood_table if ood else _shift_table)(results, split, posthoc, B, ci, seed, interval)
    if not rows:
        raise InputError(f"{results.root / results.recipe}: no run has {split} evaluations "
                         f"(add `evaluate:` to the recipe's datasets and run it again)")
    table = pd.DataFrame(rows).sort_values(["order", "dataset", "backbone"], kind="stable")
    return table[COLUMNS].reset_index(drop=True)


def _display(key: str, split: str) -> tuple[str, float]:
    """(header, scale) of a metric key: cA / cECE / cNLL for the shift aggregates, else the registry's
    header; OOD metrics and registered percent metrics shown in %."""
    from calbench.metrics import METRICS
    from calbench.metrics.ood import header

    if key in OOD_KEYS:
        return header(key), 100.0
    spec = METRICS.get(key)
    return (SHIFT_KEYS[key] if split == "shift" else spec.header), 100.0 if spec.percent else 1.0


def render_text(table: pd.DataFrame, split: str, interval: str = "percentile") -> str:
    """A plain table: one line per method x calibration (x score) x dataset x set x severity, metrics
    as columns; one footnote names the metrics shown without an interval (marked *)."""
    ood = split == "ood" or split.startswith("ood:")
    keys = list(dict.fromkeys(table["metric"]))
    lines, bare = defaultdict(dict), set()
    for row in table.itertuples(index=False):
        header, scale = _display(row.metric, split)
        band = "" if row.lo != row.lo else f" [{scale * row.lo:.2f}, {scale * row.hi:.2f}]"
        mark = "*" if row.note == NO_INTERVAL else ""
        if mark:
            bare.add(header)
        key = (row.method, row.calibration) + ((row.score,) if ood else ()) + (row.dataset, row.backbone,
                                                                                row.set, row.severity)
        lines[key][row.metric] = f"{scale * row.mean:.2f}{band}{mark}"
    head = ["method", "calibration"] + (["score"] if ood else []) + ["dataset", "backbone", "set", "severity"]
    out = ["\t".join(head + [_display(k, split)[0] for k in keys])]
    for key, cells in lines.items():
        out.append("\t".join([str(v) for v in key] + [cells.get(k, "-") for k in keys]))
    if ood:
        note = f"# means over seeds, seed-level {interval} intervals; in = clean test set; AUROC/FPR95 in %"
    else:
        what = "the mean over corruptions" if split == "shift" else f"set {split}"
        note = (f"# means over seeds of {what}; two-level {interval} intervals (seeds, then test samples); "
                "percent metrics in %")
    foot = (f"\n# * {', '.join(sorted(bare))}: {NO_INTERVAL} (the exact point value computed at evaluation "
            f"time from the full logits; compact rows cannot recompute it)" if bare else "")
    return note + "\n" + "\n".join(out) + foot + "\n"


def parse_split(split: str) -> str:
    """'shift', 'ood' or one set id ('shift:gaussian_noise:3', 'ood:svhn'); InputError otherwise."""
    if split in ("shift", "ood") or split.startswith(("shift:", "ood:")):
        return split
    raise InputError(f"--split {split}: expected shift, ood or a set id such as shift:gaussian_noise:3")


SPLIT_INTERVALS = ("percentile", "basic")


def split_text(results_dir, recipe, split: str, fmt: str | None, *, posthoc=None, B: int = 1000,
               ci: float = 0.95, seed: int = 0, interval: str | None = None) -> str:
    """The --split report as text (default) or the aggregated table as CSV (--csv). interval: percentile
    (None: the default) or basic; bca is refused (one line), since the shift and OOD aggregates have no
    jackknife influence values to correct with."""
    from calbench.report.tidy import load_results

    split = parse_split(split)
    interval = interval or "percentile"
    if interval not in SPLIT_INTERVALS:
        raise InputError(f"--interval {interval} is not available with --split (the shift and OOD aggregates "
                         f"have no jackknife); use one of {', '.join(SPLIT_INTERVALS)}")
    names = tuple(p.strip().split(":")[0] for p in posthoc.split(",")) if isinstance(posthoc, str) else ("ts",)
    table = split_table(load_results(results_dir, recipe), split, posthoc=names, B=B, ci=ci, seed=seed,
                        interval=interval)
    if fmt == "csv":
        return table.to_csv(index=False)
    return render_text(table, split, interval)
