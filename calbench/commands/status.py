"""`calbench status`: how far each recipe of a results directory has got.

A run's state is read from the store only (results_schema.md), so it works for local runs and
for submitit jobs alike, without contacting a scheduler:
  done     metrics.json with status "done"
  failed   metrics.json with status "failed" (or unreadable), or a submitted job that ended
           (submitit wrote its result file) without writing metrics.json
  running  checkpoint.pt without metrics.json (a local run in progress, or one interrupted:
           `calbench run` resumes it), or a submitted job whose log exists (it has started)
  queued   a submitted job (job.json) that has not started yet
  pending  a run id of recipe.json with none of the above
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import click

STATES = ("done", "running", "queued", "failed", "pending")


@dataclass
class RecipeStatus:
    recipe: str
    states: dict[str, str] = field(default_factory=dict)   # run id -> state
    reasons: dict[str, str] = field(default_factory=dict)  # run id -> why (failed runs)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


def recipe_run_ids(recipe_json: Path) -> list[str] | None:
    """Every run id of the matrix as recipe.json lists it (None if absent or unreadable)."""
    try:
        obj = json.loads(recipe_json.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(obj.get("run_ids"), list):
        return [str(r) for r in obj["run_ids"]]
    runs = obj.get("runs")
    if isinstance(runs, list):
        return [str(r["run_id"]) if isinstance(r, dict) else str(r) for r in runs]
    return None


def _job_state(run_dir: Path, job: dict) -> tuple[str, str]:
    """queued / running / failed for a submitted job, from submitit's own files (no sacct call)."""
    from submitit.core.utils import JobPaths

    folder = Path(job.get("folder", ""))
    if not folder.is_absolute():
        folder = run_dir.parent / folder
    paths = JobPaths(folder, job_id=str(job.get("job_id", "")), task_id=0)
    if paths.result_pickle.exists():
        return "failed", f"job {job.get('job_id')} ended without metrics.json (see {paths.stderr})"
    if paths.stdout.exists() or paths.stderr.exists():
        return "running", ""
    return "queued", ""


def run_state(run_dir: Path) -> tuple[str, str]:
    """(state, reason) of one run directory; see the module docstring."""
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        try:
            obj = json.loads(metrics.read_text())
        except (OSError, ValueError) as err:
            return "failed", f"unreadable metrics.json: {err}"
        if obj.get("status") == "done":
            return "done", ""
        return "failed", str(obj.get("reason") or obj.get("status"))
    job_file = run_dir / "job.json"
    if job_file.exists():
        try:
            state = _job_state(run_dir, json.loads(job_file.read_text()))
        except (OSError, ValueError):
            state = ("queued", "")
        return state
    if (run_dir / "checkpoint.pt").exists():
        return "running", ""
    return "pending", ""


def collect_status(results: Path) -> list[RecipeStatus]:
    """One RecipeStatus per recipe directory under `results` (sorted by name)."""
    out = []
    if not results.is_dir():
        return out
    for recipe_dir in sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")):
        run_ids = recipe_run_ids(recipe_dir / "recipe.json")
        if run_ids is None:
            run_ids = sorted(p.name for p in recipe_dir.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
            if not run_ids:
                continue
        status = RecipeStatus(recipe_dir.name)
        for run_id in run_ids:
            state, reason = run_state(recipe_dir / run_id)
            status.states[run_id] = state
            if reason:
                status.reasons[run_id] = reason
        out.append(status)
    return out


@click.command("status")
@click.option("--results", "results", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Results directory.")
@click.option("--failed", "show_failed", is_flag=True, help="Also list failed runs with their reasons.")
def status(results: Path, show_failed: bool) -> None:
    """Count done / running / queued / failed / pending runs per recipe (jobs submitted earlier too)."""
    from rich.console import Console
    from rich.table import Table

    from calbench.errors import InputError

    if not results.is_dir():
        raise InputError(f"{results}: no such results directory (run `calbench run RECIPE` first)")
    recipes = collect_status(results)
    console = Console()
    if not recipes:
        console.print(f"{results}: no runs yet")
        return
    table = Table(title=f"runs in {results}", title_justify="left")
    table.add_column("recipe")
    table.add_column("runs", justify="right")
    for state in STATES:
        table.add_column(state, justify="right")
    for rs in recipes:
        table.add_row(rs.recipe, str(len(rs.states)), *(str(rs.count(s)) for s in STATES))
    console.print(table)
    if show_failed:
        for rs in recipes:
            for run_id, reason in rs.reasons.items():
                if rs.states[run_id] == "failed":
                    console.print(f"{rs.recipe}/{run_id}: {reason}", markup=False, highlight=False)
