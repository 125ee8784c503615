"""`calbench report --split shift | ood | <set id>`: calibration under shift and OOD detection,
recomputed from every run's saved evaluation predictions (`<run>/eval/<set id>.npz`).

Shift (uncertainty-baselines' convention, Ovadia et al., NeurIPS 2019): per run, cA / cECE / cNLL at
severity s = the mean over corruptions of acc / ECE / NLL at that severity; "all" = the mean over every
(corruption, severity >= 1) set. Post-hoc rows (`<method> +ts`) apply the calibrator fitted on the run's
CLEAN validation logits to each shifted set. Cells are means over seeds; the interval is SEED-LEVEL
(percentile bootstrap over the seeds' values; a single seed gives no interval): a two-level interval
(seeds, then test samples) is not implemented for the corruption means.

OOD: AUROC / FPR95 (calbench.metrics.ood) of the clean test set (in) against each OOD set, per score.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from calbench.errors import InputError
from calbench.report.tidy import Results

EVAL_DIR = "eval"
SHIFT_KEYS = {"acc": "cA", "ece": "cECE", "nll": "cNLL"}
OOD_KEYS = ("auroc", "fpr95")
COLUMNS = ["method", "calibration", "dataset", "backbone", "set", "severity", "metric", "seeds", "mean", "lo", "hi"]


def _records(run_dir: Path):
    """(record json, npz path) of every evaluated set of a run, in name order."""
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("*.json")):
        if path.name == "index.json":
            continue
        yield json.loads(path.read_text()), path.with_suffix(".npz")


def _saved(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["logits"].astype(np.float64), data["labels"]


def _clean(run) -> dict[str, np.ndarray]:
    with np.load(Path(run.run_dir) / "predictions.npz", allow_pickle=False) as data:
        return {k: data[k] for k in ("val_logits", "val_labels", "test_logits")}


def shift_values(logits, labels, calibrators: dict, num_classes: int) -> dict[str, dict[str, float]]:
    """{calibration ("none" or a calibrator): {acc, ece, nll}} of one saved shifted set; calibrators
    fitted on the run's clean validation logits (not applied to a class subset)."""
    from calbench.metrics import compute_metrics
    from calbench.posthoc import calibrated_scores

    out = {"none": compute_metrics(labels, logits=logits, keys=tuple(SHIFT_KEYS))}
    for name, calibrator in calibrators.items() if logits.shape[1] == num_classes else ():
        scores, kind = calibrated_scores(calibrator, logits)
        out[name] = compute_metrics(labels, **{kind: scores}, keys=tuple(SHIFT_KEYS))
    return out


def _run_shift_rows(run, posthoc, only: str | None) -> list[dict]:
    """Per (calibration, set, metric) values of one run's shift sets (one set when `only` is an id)."""
    from calbench.posthoc import fit_calibrator

    clean, rows = _clean(run), []
    calibrators = {name: fit_calibrator(name, clean["val_logits"].astype(np.float64), clean["val_labels"])
                   for name in posthoc}
    for record, npz in _records(run.run_dir):
        if record["kind"] != "shift" or (only and record["id"] != only) or (not only and not record["severity"]):
            continue
        values = shift_values(*_saved(npz), calibrators, clean["val_logits"].shape[1])
        for calibration, block in values.items():
            for key, value in block.items():
                rows.append({"calibration": calibration, "set": record["family"], "severity": record["severity"],
                             "id": record["id"], "metric": key, "value": float(value)})
    return rows


def _run_ood_rows(run, scores=("msp", "energy")) -> list[dict]:
    from calbench.metrics.ood import ood_metrics, ood_scores

    clean, rows = _clean(run), []
    ins = ood_scores(clean["test_logits"], scores)
    for record, npz in _records(run.run_dir):
        if record["kind"] != "ood":
            continue
        outs = ood_scores(_saved(npz)[0], scores)
        for score in scores:
            for key, value in ood_metrics(ins[score], outs[score], keys=OOD_KEYS).items():
                rows.append({"calibration": score, "set": record["family"], "severity": None, "id": record["id"],
                             "metric": key, "value": float(value)})
    return rows


def per_run_table(results: Results, split: str, posthoc=("ts",)) -> pd.DataFrame:
    """One row per run x calibration x set x metric (values as fractions), every done run."""
    only = split if split.count(":") >= 1 and split not in ("shift", "ood") else None
    rows = []
    for run in results.runs:
        if not run.done:
            continue
        found = _run_ood_rows(run) if split == "ood" else _run_shift_rows(run, tuple(posthoc), only)
        for row in found:
            rows.append({"method": run.method_label, "dataset": run.dataset, "backbone": run.backbone,
                         "seed": run.seed, "order": run.order.get("method", 0), **row})
    if not rows:
        raise InputError(f"{results.root / results.recipe}: no run has {split} evaluations "
                         f"(add `evaluate:` to the recipe's datasets and run it again)")
    return pd.DataFrame(rows)


def _interval(values: np.ndarray, B: int, ci: float, seed: int) -> tuple[float, float]:
    if len(values) < 2 or B == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (B, len(values)))].mean(axis=1)
    return tuple(float(q) for q in np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2]))


def _aggregate(per_seed: pd.DataFrame, keys, B: int, ci: float, seed: int) -> pd.DataFrame:
    rows = []
    for key, group in per_seed.groupby(keys, sort=False, dropna=False):
        values = group["value"].to_numpy(dtype=float)
        lo, hi = _interval(values, B, ci, seed)
        rows.append({**dict(zip(keys, key)), "seeds": len(values), "mean": float(values.mean()), "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def split_table(results: Results, split: str, *, posthoc=("ts",), B: int = 1000, ci: float = 0.95,
                seed: int = 0) -> pd.DataFrame:
    """The aggregated table of COLUMNS (see the module docstring for the conventions)."""
    runs = per_run_table(results, split, posthoc)
    cell = ["order", "method", "calibration", "dataset", "backbone"]
    if split == "shift":      # per seed: mean over corruptions per severity, and over every set ("all")
        sev = runs.groupby(cell + ["seed", "severity", "metric"], sort=False)["value"].mean().reset_index()
        overall = runs.groupby(cell + ["seed", "metric"], sort=False)["value"].mean().reset_index()
        overall["severity"] = "all"
        sev["severity"] = sev["severity"].astype(int).astype(str)
        per_seed, sets = pd.concat([sev, overall]), "corruptions"
        per_seed["set"] = sets
    else:
        per_seed = runs.assign(severity=runs["severity"].map(lambda s: "" if s is None or s != s else str(int(s))))
    table = _aggregate(per_seed, cell + ["set", "severity", "metric"], B, ci, seed)
    table = table.sort_values(["order", "dataset", "backbone"], kind="stable")
    return table[COLUMNS].reset_index(drop=True)


def render_text(table: pd.DataFrame, split: str) -> str:
    """A plain table: one line per method x calibration x dataset x set x severity, metrics as columns."""
    percent = {"acc", "ece", "auroc", "fpr95"}
    headers = SHIFT_KEYS if split != "ood" else {k: k.upper() for k in OOD_KEYS}
    lines = defaultdict(dict)
    for row in table.itertuples(index=False):
        scale = 100.0 if row.metric in percent else 1.0
        band = "" if row.lo != row.lo else f" [{scale * row.lo:.2f}, {scale * row.hi:.2f}]"
        key = (row.method, row.calibration, row.dataset, row.backbone, row.set, row.severity)
        lines[key][row.metric] = f"{scale * row.mean:.2f}{band}"
    head = ["method", "calibration" if split != "ood" else "score", "dataset", "backbone", "set", "severity"]
    out = ["\t".join(head + [headers[k] for k in headers])]
    for key, cells in lines.items():
        out.append("\t".join([str(v) for v in key] + [cells.get(k, "-") for k in headers]))
    note = ("# means over seeds, seed-level percentile intervals; acc/ECE/AUROC/FPR95 in %"
            if split != "ood" else "# means over seeds; in = clean test set; AUROC/FPR95 in %")
    return note + "\n" + "\n".join(out) + "\n"


def parse_split(split: str) -> str:
    """'shift', 'ood' or one set id ('shift:gaussian_noise:3', 'ood:svhn'); InputError otherwise."""
    if split in ("shift", "ood") or split.startswith(("shift:", "ood:")):
        return split
    raise InputError(f"--split {split}: expected shift, ood or a set id such as shift:gaussian_noise:3")


def split_text(results_dir, recipe, split: str, fmt: str | None, *, posthoc=None, B: int = 1000,
               ci: float = 0.95, seed: int = 0) -> str:
    """The --split report as text (default) or the aggregated table as CSV (--csv)."""
    from calbench.report.tidy import load_results

    split = parse_split(split)
    names = tuple(p.strip().split(":")[0] for p in posthoc.split(",")) if isinstance(posthoc, str) else ("ts",)
    table = split_table(load_results(results_dir, recipe), split, posthoc=names, B=B, ci=ci, seed=seed)
    if fmt == "csv":
        return table.to_csv(index=False)
    return render_text(table, split)
