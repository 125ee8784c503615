"""`calbench run RECIPE`: expand a recipe into its matrix and train the runs not yet done."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from calbench.errors import CalbenchError, ConfigError


def _parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        gpus = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise ConfigError(f"--gpus {text}: expected a comma-separated list of GPU indices, e.g. 0,1") from None
    if not gpus:
        raise ConfigError("--gpus: no GPU index given")
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in gpus if g < 0 or g >= available]
    if missing:
        have = f"GPUs 0-{available - 1}" if available else "no CUDA GPU"
        raise ConfigError(f"--gpus {text}: GPU {missing[0]} is not there (this machine has {have}); "
                          f"use --device cpu")
    return gpus


def build_matrix(recipe_path: str, sets: tuple[str, ...], only: str | None):
    """(recipe, every spec of the matrix, the specs selected by --only)."""
    from calbench.recipe import expand, filter_specs, load_recipe

    recipe = load_recipe(recipe_path, sets)
    specs = expand(recipe)
    selected = filter_specs(specs, only)
    if only and not selected:
        raise ConfigError(f"--only {only}: matches no run of {recipe_path}")
    return recipe, specs, selected


def check_roots(recipe, todo) -> None:
    """Every dataset a run still needs must be on disk: one line naming the key and the path."""
    from calbench.data import check_root

    needed = {s.dataset for s in todo}
    for i, ds in enumerate(recipe.datasets):
        if ds["name"] not in needed:
            continue
        try:
            check_root(ds["name"], ds["root"], **ds["options"])
        except CalbenchError as err:
            unset = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", str(ds["root"]))))
            hint = f" (environment variable {', '.join(unset)} is not set)" if unset else ""
            raise ConfigError(f"{recipe.path}: datasets[{i}].root{hint}: {err}") from None


def _matrix_table(specs, done: set[str], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("run id", "dataset", "backbone", "method", "seed", "state"):
        table.add_column(col, overflow="fold", no_wrap=col == "run id")
    for s in specs:
        table.add_row(s.run_id, s.dataset, s.backbone, s.method_label, str(s.seed),
                      "[green]done[/]" if s.run_id in done else "to do")
    return table


@click.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--gpus", default=None, metavar="0,1", help="GPUs to use, one worker per GPU (each sees only its GPU).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Train on the CPU (default without --gpus) or on CUDA device 0.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Runs at once per device (default: 1 per GPU; on the CPU min(4, cores), "
                   "the cores shared out as torch threads).")
@click.option("--results", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results directory; runs go to RESULTS/<recipe name>/<run id>/.")
@click.option("--dry-run", is_flag=True, help="Print the matrix (to do / done) and exit; needs no dataset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set train.epochs=2 --set seeds=[0] (repeatable).")
@click.option("--only", default=None, metavar="PATTERN",
              help="Only runs whose method label, method, dataset, backbone or run id matches (wildcards).")
@click.option("--launcher", type=click.Choice(["local", "submitit"]), default="local", show_default=True,
              help="local: workers on this machine; submitit: one job per run (SLURM or local executor).")
@click.option("--cluster", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="submitit backend.")
@click.option("--partition", default=None, help="SLURM partition (submitit).")
@click.option("--gpus-per-run", type=int, default=1, show_default=True,
              help="Processes (GPUs) per run; > 1 trains each run with torch.distributed data parallel.")
@click.option("--time", "time_min", type=int, default=240, show_default=True, metavar="MINUTES",
              help="Time limit of each submitit job.")
@click.option("--array-parallelism", type=int, default=64, show_default=True,
              help="Jobs of the array running at once (submitit).")
def run(recipe, gpus, device, jobs, results, dry_run, sets, only, launcher, cluster, partition,
        gpus_per_run, time_min, array_parallelism):
    """Train the matrix of runs RECIPE describes (methods x datasets x backbones x seeds).

    \b
    Finished runs are never recomputed (a run's id hashes everything its result depends on);
    a killed run resumes from its last epoch. Exit status 1 if any run failed, 2 on bad input.
    \b
    Examples:
      calbench run recipes/quickstart.yaml
      calbench run recipes/table1.yaml --gpus 0,1 --dry-run
      calbench run recipes/quickstart.yaml --set train.epochs=2 --only 'cals*'
    """
    from rich.console import Console

    from calbench.runner.store import is_done, run_dir, write_recipe_json

    console = Console(stderr=False)
    if gpus_per_run > 1:   # the global batch grows with the processes: a different result, a different id
        sets = tuple(sets) + (f"train.world_size={gpus_per_run}",)
    rec, specs, selected = build_matrix(recipe, sets, only)
    done = {s.run_id for s in selected if is_done(run_dir(results, s.recipe, s.run_id))}
    todo = [s for s in selected if s.run_id not in done]
    if dry_run:
        console.print(_matrix_table(selected, done, f"{rec.name}: {len(selected)} runs, "
                                                    f"{len(todo)} to do, {len(done)} done"))
        return
    if gpus is not None and device == "cpu":
        raise ConfigError(f"--gpus {gpus} and --device cpu contradict each other; give one of them")
    gpu_list = _parse_gpus(gpus)
    if device == "cuda" and gpu_list is None:
        gpu_list = _parse_gpus("0")
    check_roots(rec, todo)
    write_recipe_json(results, rec, specs)
    console.print(f"[bold]{rec.name}[/]: {len(selected)} runs, {len(done)} already done, {len(todo)} to train "
                  f"-> {Path(results) / rec.name}")
    if not todo:
        return
    if launcher == "submitit":
        from calbench.runner.submitit_launcher import SubmititOptions, submit_runs

        opts = SubmititOptions(cluster=cluster, partition=partition, gpus_per_run=gpus_per_run,
                               time_min=time_min, array_parallelism=array_parallelism).validate()
        submitted = submit_runs([s.to_dict() for s in todo], results, rec.name, opts,
                                device=("cuda" if gpu_list else None), echo=console.print)
        console.print(f"submitted {len(submitted)} job(s); `calbench status --results {results}` follows them")
        return
    if gpus_per_run > 1:
        statuses = _run_distributed_locally(todo, results, gpu_list, gpus_per_run, console)
    else:
        default_jobs = 1 if gpu_list else min(4, os.cpu_count() or 1)   # 2 on a 2-core laptop
        from calbench.runner.scheduler import plan_slots

        statuses = _run_with_progress(todo, results, plan_slots(gpu_list, jobs or default_jobs), console)
    _summary(todo, statuses, results, console)
    if any(v == "failed" for v in statuses.values()):
        sys.exit(1)


def _run_distributed_locally(todo, results, gpu_list, gpus_per_run, console) -> dict[str, str]:
    from calbench.runner.distributed_run import run_distributed

    statuses = {}
    for spec in todo:
        console.print(f"{spec.run_id} {spec.method_label} on {spec.dataset}: {gpus_per_run} processes")
        statuses[spec.run_id] = run_distributed(spec.to_dict(), results, device="cuda" if gpu_list else "cpu",
                                                gpus=gpus_per_run)
    return statuses


def _run_with_progress(todo, results, slots, console) -> dict[str, str]:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from calbench.runner.scheduler import run_matrix

    labels = {s.run_id: f"{s.method_label} · {s.dataset} · {s.backbone} · seed {s.seed}" for s in todo}
    counts = {"done": 0, "failed": 0, "skipped": 0}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
    per_run: dict[str, int] = {}
    with progress:
        matrix = progress.add_task(_matrix_text(counts, len(todo), 0), total=len(todo))

        def on_event(event):
            rid = event["run_id"]
            if event["kind"] == "started":
                per_run[rid] = progress.add_task(f"  [dim]{labels[rid]}[/]", total=None)
                progress.update(matrix, description=_matrix_text(counts, len(todo), len(per_run)))
            elif event["kind"] == "epoch" and rid in per_run:
                progress.update(per_run[rid], completed=event["done"], total=event["total"])
            elif event["kind"] == "finished":
                counts[event["status"]] = counts.get(event["status"], 0) + 1
                if rid in per_run:
                    progress.remove_task(per_run.pop(rid))
                if event["status"] == "failed":
                    progress.console.print(f"[red]failed[/] {labels[rid]} ({rid})")
                progress.update(matrix, advance=1,
                                description=_matrix_text(counts, len(todo), len(per_run)))

        try:
            result = run_matrix(todo, results, slots, on_event=on_event)
        except KeyboardInterrupt:
            progress.stop()
            finished = counts["done"] + counts["failed"]
            click.echo(f"calbench: interrupted after {finished} of {len(todo)} runs; finished runs are "
                       f"kept and the same command resumes the rest", err=True)
            sys.exit(130)
    return result.status


def _matrix_text(counts, total, running) -> str:
    skipped = counts.get("skipped", 0)     # done meanwhile or being trained by another `calbench run`
    left = total - counts["done"] - counts["failed"] - skipped
    elsewhere = f" · {skipped} by another process" if skipped else ""
    return (f"runs: [green]{counts['done']} done[/]{elsewhere} · {running} running · "
            f"[red]{counts['failed']} failed[/] · {left - running} left")


def _summary(todo, statuses, results, console) -> None:
    from rich.table import Table

    from calbench.runner.store import read_metrics, run_dir

    table = Table(title="summary", title_justify="left")
    for col in ("dataset", "backbone", "method", "seed", "status", "acc", "ece", "ece (ts)", "time"):
        # names wrap instead of being cut to "ls(alp…" on an 80-column terminal
        table.add_column(col, overflow="fold" if col in ("dataset", "backbone", "method") else "ellipsis")
    for s in todo:
        status = statuses.get(s.run_id, "not run")
        acc = ece = ece_ts = secs = ""
        try:
            m = read_metrics(run_dir(results, s.recipe, s.run_id) / "metrics.json")
            test, test_ts = m.get("metrics", {}).get("test", {}), m.get("metrics", {}).get("test_ts", {})
            acc = f"{100 * test['acc']:.2f}" if "acc" in test else ""
            ece = f"{100 * test['ece']:.2f}" if "ece" in test else ""
            ece_ts = f"{100 * test_ts['ece']:.2f}" if "ece" in test_ts else ""
            secs = f"{m.get('wall_time_s', 0):.1f}s"
            if status == "failed":
                acc = m.get("reason") or ""
        except CalbenchError:
            pass
        style = {"done": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(s.dataset, s.backbone, s.method_label, str(s.seed), f"[{style}]{status}[/]",
                      acc, ece, ece_ts, secs)
    console.print(table)
