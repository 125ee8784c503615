"""`calbench status`: how far each recipe of a results directory has got.

A run's state is read from the store only, so it works for local runs and for submitit jobs alike,
without contacting a scheduler (`calbench.runner.store.run_state` says what each state means).
A damaged store file (metrics.json or recipe.json that is not what calbench writes) gets one line
naming it; the rest of the store is still counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import click

from calbench.runner.store import run_state

STATES = ("done", "running", "queued", "failed", "pending")


@dataclass
class RecipeStatus:
    recipe: str
    states: dict[str, str] = field(default_factory=dict)   # run id -> state
    reasons: dict[str, str] = field(default_factory=dict)  # run id -> why (failed runs)
    problems: list[str] = field(default_factory=list)      # damaged store files, one line each

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


def recipe_run_ids(recipe_json: Path) -> tuple[list[str] | None, str | None]:
    """(every run id of the matrix as recipe.json lists it, why the file cannot be used).

    (None, None) when there is no recipe.json; (None, reason) when it is unreadable or foreign."""
    if not recipe_json.exists():
        return None, None
    try:
        obj = json.loads(recipe_json.read_text())
    except (OSError, ValueError) as err:
        return None, f"{recipe_json}: unreadable ({type(err).__name__}: {err})"
    if isinstance(obj, dict) and isinstance(obj.get("run_ids"), list):
        return [str(r) for r in obj["run_ids"]], None
    runs = obj.get("runs") if isinstance(obj, dict) else None
    if isinstance(runs, list) and all(isinstance(r, str) or (isinstance(r, dict) and "run_id" in r)
                                      for r in runs):
        return [str(r["run_id"]) if isinstance(r, dict) else r for r in runs], None
    return None, f"{recipe_json}: not a calbench recipe file (no list of runs)"


def _run_dirs(recipe_dir: Path) -> list[str]:
    return sorted(p.name for p in recipe_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def collect_status(results: Path) -> list[RecipeStatus]:
    """One RecipeStatus per recipe directory under `results` (sorted by name)."""
    out = []
    if not results.is_dir():
        return out
    for recipe_dir in sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")):
        run_ids, problem = recipe_run_ids(recipe_dir / "recipe.json")
        status = RecipeStatus(recipe_dir.name)
        if problem:
            status.problems.append(f"{problem}; runs counted from the run directories")
        if run_ids is None:
            run_ids = _run_dirs(recipe_dir)
            if not run_ids:
                continue
        for run_id in run_ids:
            state, reason = run_state(recipe_dir / run_id)
            status.states[run_id] = state
            if reason:
                status.reasons[run_id] = reason
                if reason.startswith((str(recipe_dir / run_id), "done but")):   # a damaged file
                    status.problems.append(f"{reason} (counted as failed)")
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
    for rs in recipes:
        for problem in rs.problems:
            click.echo(f"calbench: warning: {problem}", err=True)
    if show_failed:
        for rs in recipes:
            for run_id, reason in rs.reasons.items():
                if rs.states[run_id] == "failed":
                    console.print(f"{rs.recipe}/{run_id}: {reason}", markup=False, highlight=False)
