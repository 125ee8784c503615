"""Load a results directory (results_schema.md) into one tidy table: one row per run x split x metric.

Everything `report` and `plot` show is built from this table plus the runs' saved predictions
(load_predictions), so every number traces back to predictions.npz. Unreadable metrics.json files
are collected in Results.corrupt (the caller warns about each in one line); runs listed in
recipe.json without a finished metrics.json are collected in Results.missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calbench.errors import InputError

TIDY_COLUMNS = ("recipe", "run_id", "status", "method", "method_label", "dataset", "backbone", "seed",
                "method_order", "dataset_order", "backbone_order", "split", "metric", "value")
SPLITS = ("test", "test_ts", "val")


@dataclass
class Run:
    """One run directory whose metrics.json could be read (status "done" or "failed")."""

    run_dir: Path
    run_id: str
    status: str
    method: str
    method_label: str
    dataset: str
    backbone: str
    seed: int
    order: dict
    hparams: dict
    metrics: dict  # split -> metric -> fraction
    temperature: float | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def group(self) -> tuple[str, str]:
        """The column group of a Table-1-like table: (dataset, backbone)."""
        return (self.dataset, self.backbone)

    def history(self) -> list[dict]:
        """history.jsonl as a list of per-epoch dicts (empty when absent; bad lines skipped)."""
        path = self.run_dir / "history.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows


@dataclass
class Results:
    """A recipe's runs, the tidy table, and what could not be used."""

    root: Path
    recipe: str
    runs: list[Run]
    corrupt: list[tuple[Path, str]] = field(default_factory=list)  # (metrics.json, why)
    missing: list[dict] = field(default_factory=list)  # recipe.json entries with no metrics.json
    recipe_json: dict = field(default_factory=dict)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.done]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.done]

    def tidy(self) -> pd.DataFrame:
        return tidy_table(self.recipe, self.runs)

    def methods(self) -> list[str]:
        """Method labels in recipe order (order.method, then first appearance)."""
        return _ordered([(r.order.get("method", 10 ** 6), r.method_label) for r in self.runs]
                        + [(m.get("order", {}).get("method", 10 ** 6), m["method_label"]) for m in self.missing
                           if m.get("method_label")])

    def groups(self) -> list[tuple[str, str]]:
        """(dataset, backbone) column groups in recipe order."""
        items = [((r.order.get("dataset", 10 ** 6), r.order.get("backbone", 10 ** 6)), r.group) for r in self.runs]
        items += [((m.get("order", {}).get("dataset", 10 ** 6), m.get("order", {}).get("backbone", 10 ** 6)),
                   (m["dataset"], m["backbone"])) for m in self.missing if m.get("dataset") and m.get("backbone")]
        return _ordered(items)


def _ordered(items) -> list:
    seen: dict = {}
    for i, (key, value) in enumerate(items):
        if value not in seen:
            seen[value] = (key, i)
    return sorted(seen, key=lambda v: seen[v])


def tidy_table(recipe: str, runs: list[Run]) -> pd.DataFrame:
    """One row per run x split x metric, values as fractions exactly as metrics.json stores them; runs in
    recipe order (method, dataset, backbone, seed)."""
    rows = []
    runs = sorted(runs, key=lambda r: (r.order.get("method", 10 ** 6), r.order.get("dataset", 10 ** 6),
                                       r.order.get("backbone", 10 ** 6), r.method_label, r.dataset, r.backbone,
                                       r.seed))
    for r in runs:
        for split, block in (r.metrics or {}).items():
            if not isinstance(block, dict):
                continue
            for metric, value in block.items():
                rows.append((recipe, r.run_id, r.status, r.method, r.method_label, r.dataset, r.backbone, r.seed,
                             r.order.get("method", -1), r.order.get("dataset", -1), r.order.get("backbone", -1),
                             split, metric, float(value) if value is not None else np.nan))
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def _run_from_json(run_dir: Path, obj: dict) -> Run:
    if not isinstance(obj, dict) or obj.get("status") not in ("done", "failed"):
        raise ValueError("not a metrics.json object with status done/failed")
    method = str(obj.get("method") or "?")
    return Run(run_dir=run_dir, run_id=str(obj.get("run_id") or run_dir.name), status=obj["status"], method=method,
               method_label=str(obj.get("method_label") or method), dataset=str(obj.get("dataset") or "?"),
               backbone=str(obj.get("backbone") or "?"), seed=int(obj.get("seed") or 0),
               order=dict(obj.get("order") or {}), hparams=dict(obj.get("hparams") or {}),
               metrics=dict(obj.get("metrics") or {}), temperature=obj.get("temperature"),
               reason=obj.get("reason"))


def list_recipes(root: Path) -> list[str]:
    """Recipe folders of a results directory: those with a recipe.json or at least one run folder."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "recipe.json").exists() or any((c / "metrics.json").exists() for c in d.iterdir() if c.is_dir()):
            out.append(d.name)
    return out


def _recipe_entries(obj: dict) -> list[dict]:
    """The run entries of recipe.json ("runs": list of dicts or ids, or "run_ids")."""
    runs = obj.get("runs")
    if isinstance(runs, list):
        return [dict(r) if isinstance(r, dict) else {"run_id": str(r)} for r in runs]
    if isinstance(obj.get("run_ids"), list):
        return [{"run_id": str(r)} for r in obj["run_ids"]]
    return []


def load_results(results: str | Path = "results", recipe: str | None = None) -> Results:
    """Read every run of one recipe. recipe=None picks the only recipe there; InputError when the
    directory holds no results, several recipes and none chosen, or an unknown recipe."""
    root = Path(results)
    recipes = list_recipes(root)
    if not recipes:
        raise InputError(f"{root}: no results found (expected {root}/<recipe>/<run id>/metrics.json)")
    if recipe is None:
        if len(recipes) > 1:
            raise InputError(f"{root}: several recipes ({', '.join(recipes)}); choose one with --recipe")
        recipe = recipes[0]
    if recipe not in recipes:
        from calbench.registry import did_you_mean
        raise InputError(f"{root}: unknown recipe '{recipe}'{did_you_mean(recipe, recipes)}; "
                         f"valid: {', '.join(recipes)}")
    rdir = root / recipe
    recipe_json: dict = {}
    if (rdir / "recipe.json").exists():
        try:
            recipe_json = json.loads((rdir / "recipe.json").read_text())
        except ValueError:
            recipe_json = {}
    runs, corrupt, seen = [], [], set()
    for d in sorted(p for p in rdir.iterdir() if p.is_dir()):
        path = d / "metrics.json"
        if not path.exists():
            continue
        try:
            run = _run_from_json(d, json.loads(path.read_text()))
        except (ValueError, TypeError, OSError) as err:
            corrupt.append((path, str(err).split("\n")[0]))
            continue
        runs.append(run)
        seen.add(run.run_id)
        seen.add(d.name)
    bad = {p.parent.name for p, _ in corrupt}
    missing = [dict(e, why="unreadable metrics.json" if e.get("run_id") in bad else "not run")
               for e in _recipe_entries(recipe_json) if e.get("run_id") not in seen]
    if not runs and not missing and not corrupt:
        raise InputError(f"{rdir}: no runs found")
    return Results(root=root, recipe=recipe, runs=runs, corrupt=corrupt, missing=missing, recipe_json=recipe_json)


def load_predictions(run: Run, split: str = "test", posthoc: str | None = None) -> dict:
    """{"labels", "logits"} of a run's predictions.npz for split "test" or "val"; posthoc="ts" divides the
    logits by the run's fitted temperature (metrics.json "temperature") exactly as the engine computed its
    test_ts block: float64 logits / T, rounded to float32 (so the recomputed numbers equal metrics.json)."""
    path = run.run_dir / "predictions.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            labels, logits = data[f"{split}_labels"], data[f"{split}_logits"]
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: cannot read {split} predictions ({err})") from None
    if posthoc == "ts":
        if run.temperature is None:
            raise InputError(f"{run.run_dir / 'metrics.json'}: no fitted temperature for --posthoc ts")
        logits = (logits.astype(np.float64) / float(run.temperature)).astype(np.float32)
    elif posthoc:
        raise InputError(f"unknown post-hoc '{posthoc}' (valid: ts)")
    return {"labels": labels, "logits": logits}
