"""`calbench run RECIPE`: expand a recipe into its matrix and train the runs not yet done."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import click

from calbench.errors import CalbenchError, ConfigError, InputError


def _parse_gpus(text: str | None) -> list[int] | None:
    """`--gpus 0,1` as a list; a repeated index is refused (two workers would share one GPU)."""
    if text is None:
        return None
    try:
        gpus = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise ConfigError(f"--gpus {text}: expected a comma-separated list of GPU indices, e.g. 0,1") from None
    if not gpus:
        raise ConfigError("--gpus: no GPU index given")
    twice = sorted({g for g in gpus if gpus.count(g) > 1})
    if twice:
        raise ConfigError(f"--gpus {text}: GPU {twice[0]} is listed twice (one worker per GPU; "
                          f"use --jobs N for N runs at once on each GPU)")
    import torch    # only with GPUs asked for: their workers need it anyway

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in gpus if g < 0 or g >= available]
    if missing:
        have = f"GPUs 0-{available - 1}" if available else "no CUDA GPU"
        raise ConfigError(f"--gpus {text}: GPU {missing[0]} is not there (this machine has {have}); "
                          f"use --device cpu")
    return gpus


def check_counts(gpus_per_run: int, time_min: int, array_parallelism: int | None) -> None:
    """The launcher's counts are positive (one line each, before anything is read or written)."""
    for name, value in (("--gpus-per-run", gpus_per_run), ("--time", time_min),
                        ("--array-parallelism", array_parallelism)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}: must be a positive integer, got {value}")


def check_results_writable(results: str) -> None:
    """The results directory can be created and written: one line now rather than a traceback
    from the first run (a read-only folder, a path under a file, no permission)."""
    import tempfile

    path = Path(results)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".calbench-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise InputError(f"--results {results}: cannot write there ({why}); "
                         f"choose a writable directory") from None


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
              help="Runs at once per device (default: 1 per GPU; on the CPU min(4, cores)). Each run "
                   "gets cores // (N x GPUs) torch threads, or CALBENCH_THREADS when that is set.")
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
@click.option("--array-parallelism", type=int, default=None,
              help="Jobs running at once (submitit). Default: 64 on SLURM; with --cluster local, "
                   "what fits this machine (cores, memory, GPUs).")
@click.option("-v", "--verbose", is_flag=True, help="Print the per-run table after training, even when it is long.")
def run(recipe, gpus, device, jobs, results, dry_run, sets, only, launcher, cluster, partition,
        gpus_per_run, time_min, array_parallelism, verbose):
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
    check_counts(gpus_per_run, time_min, array_parallelism)
    if gpus is not None and device == "cpu":
        raise ConfigError(f"--gpus {gpus} and --device cpu contradict each other; give one of them")
    if gpus_per_run > 1:   # the global batch grows with the processes: a different result, a different id
        sets = tuple(sets) + (f"train.world_size={gpus_per_run}",)
    rec, specs, selected = build_matrix(recipe, sets, only)
    from calbench.runner.evaluate_sets import missing_entries

    done = {s.run_id for s in selected if is_done(run_dir(results, s.recipe, s.run_id))
            and not missing_entries(s, run_dir(results, s.recipe, s.run_id))}   # else: evaluate only
    todo = [s for s in selected if s.run_id not in done]
    evaluate_only = {s.run_id for s in todo if is_done(run_dir(results, s.recipe, s.run_id))}   # trained before
    if dry_run:
        console.print(_matrix_table(selected, done, f"{rec.name}: {len(selected)} runs, "
                                                    f"{len(todo)} to do, {len(done)} done"))
        return _leave(0)
    gpu_list = _parse_gpus("0" if device == "cuda" and gpus is None else gpus)
    check_roots(rec, todo)          # before the results folder is created: a bad root leaves nothing
    check_results_writable(results)
    _write_recipe_json(write_recipe_json, results, rec, specs)
    evaluating = f", {len(evaluate_only)} to evaluate" if evaluate_only else ""
    console.print(f"[bold]{rec.name}[/]: {len(selected)} runs, {len(done)} already done, "
                  f"{len(todo) - len(evaluate_only)} to train{evaluating} -> {Path(results) / rec.name}")
    if not todo:
        return _leave(0)
    started = time.perf_counter()
    if launcher == "submitit":
        _submit(todo, results, rec.name, gpu_list, console, cluster=cluster, partition=partition,
                gpus_per_run=gpus_per_run, time_min=time_min, array_parallelism=array_parallelism)
        if cluster == "slurm":      # queued: `calbench status` follows them
            return
        statuses, reasons = _states_in_store(todo, results)
    else:
        statuses, reasons = _train_locally(todo, results, gpu_list, gpus_per_run, jobs, console)
    _summary(rec.name, todo, statuses, reasons, results, console, verbose, time.perf_counter() - started,
             evaluate_only)
    failed = any(v == "failed" for v in statuses.values())
    if launcher == "submitit":      # submitit's own exit handlers run: the ordinary exit
        if failed:
            sys.exit(1)
        return
    _leave(1 if failed else 0)


def _leave(code: int) -> None:
    """End the command with `code`. As the `calbench` process itself, with os._exit after flushing
    the standard streams: the interpreter's teardown with torch loaded costs a second or more, and
    nothing is left to do (every store file is written atomically and fsynced, the workers were
    joined; calbench.engine.distributed ends its ranks the same way). Called from Python (tests,
    CliRunner), the ordinary return or SystemExit."""
    if not _is_cli_process():
        if code:
            sys.exit(code)
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _is_cli_process() -> bool:
    """True in `calbench ...` or `python -m calbench.cli ...` with the real standard streams."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    entry = getattr(spec, "name", None) in ("calbench.cli", "calbench.__main__") or \
        Path(sys.argv[0] if sys.argv else "").name == "calbench"
    return entry and sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__


def _train_locally(todo, results, gpu_list, gpus_per_run, jobs, console):
    """(status, failure reason) of each run, trained on this machine's workers."""
    if gpus_per_run > 1:
        return _run_distributed_locally(todo, results, gpu_list, gpus_per_run, console)
    from calbench.runner.scheduler import plan_slots

    default_jobs = 1 if gpu_list else min(4, os.cpu_count() or 1)   # 2 on a 2-core laptop
    return _run_with_progress(todo, results, plan_slots(gpu_list, jobs or default_jobs), console)


def _write_recipe_json(write, results, rec, specs) -> None:
    try:
        write(results, rec, specs)
    except OSError as err:
        from calbench.runner.execute import describe_os_error

        raise InputError(f"--results {results}: {describe_os_error(err)}") from None


def _submit(todo, results, recipe_name, gpu_list, console, **options) -> None:
    from calbench.runner.submitit_launcher import SubmititOptions, submit_runs

    opts = SubmititOptions(**options).validate()
    submitted = submit_runs([s.to_dict() for s in todo], results, recipe_name, opts,
                            device=("cuda" if gpu_list else None), echo=console.print)
    if opts.cluster == "slurm":
        console.print(f"submitted {len(submitted)} job(s); `calbench status --results {results}` follows them")


def _states_in_store(todo, results):
    """(status, failure reason) of each run as the store has it (after local submitit jobs ended)."""
    from calbench.runner.store import run_dir, run_state

    statuses, reasons = {}, {}
    for s in todo:
        state, reason = run_state(run_dir(results, s.recipe, s.run_id))
        statuses[s.run_id] = "done" if state == "done" else "failed"
        if reason:
            reasons[s.run_id] = reason
    return statuses, reasons


def _run_distributed_locally(todo, results, gpu_list, gpus_per_run, console):
    """Each run in turn with `gpus_per_run` data-parallel processes; (statuses, failure reasons)."""
    from calbench.runner.distributed_run import run_distributed

    statuses, reasons = {}, {}
    for spec in todo:
        console.print(f"{spec.run_id} {spec.method_label} on {spec.dataset}: {gpus_per_run} processes")
        try:
            statuses[spec.run_id] = run_distributed(spec.to_dict(), results, gpus=gpus_per_run,
                                                    device="cuda" if gpu_list else "cpu")
        except RuntimeError as err:   # a rank died before it could record its failure
            statuses[spec.run_id], reasons[spec.run_id] = "failed", str(err).splitlines()[0]
    return statuses, reasons


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
                    why = f": {event['reason']}" if event.get("reason") else ""
                    progress.console.print(f"[red]failed[/] {labels[rid]} ({rid}){why}", highlight=False)
                progress.update(matrix, advance=1,
                                description=_matrix_text(counts, len(todo), len(per_run)))

        try:
            result = run_matrix(todo, results, slots, on_event=on_event)
        except KeyboardInterrupt:
            progress.stop()
            finished = counts["done"] + counts["failed"]
            click.echo(f"calbench: interrupted after {finished} of {len(todo)} runs; finished runs are "
                       f"kept and the same command resumes the rest", err=True)
            _leave(130)
    return result.status, result.reasons


def _matrix_text(counts, total, running) -> str:
    skipped = counts.get("skipped", 0)     # done meanwhile or being trained by another `calbench run`
    left = total - counts["done"] - counts["failed"] - skipped
    elsewhere = f" · {skipped} by another process" if skipped else ""
    return (f"runs: [green]{counts['done']} done[/]{elsewhere} · {running} running · "
            f"[red]{counts['failed']} failed[/] · {left - running} left")


def _summary(recipe, todo, statuses, reasons, results, console, verbose: bool, seconds: float,
             evaluate_only=frozenset()) -> None:
    """Counts, one line per failed run and the next command; the per-run table with -v, or when it
    fits the terminal (every row on one line, all rows on one screen)."""
    from calbench.runner.store import read_metrics, run_dir

    records = {}
    for s in todo:
        try:
            records[s.run_id] = read_metrics(run_dir(results, s.recipe, s.run_id) / "metrics.json")
        except CalbenchError:
            records[s.run_id] = {}
    natural = console.measure(_summary_table(todo, statuses, records),
                              options=console.options.update_width(10**4)).maximum
    fits = len(todo) + 6 <= console.height and natural <= console.width
    table = _summary_table(todo, statuses, records, width=console.width)
    if verbose or fits:
        console.print(table)
    counts = {k: sum(1 for s in todo if statuses.get(s.run_id, "not run") == k)
              for k in ("done", "failed", "skipped", "not run")}
    parts = [f"{counts['done']} done", f"{counts['failed']} failed"]
    parts += [f"{counts['skipped']} done by another process"] if counts["skipped"] else []
    parts += [f"{counts['not run']} not run"] if counts["not run"] else []
    runs = f"{len(todo)} run" + ("s" if len(todo) != 1 else "")
    trained = len(todo) - len(evaluate_only)      # the others only evaluated new evaluation sets
    verb = ("trained" if not evaluate_only else "evaluated" if not trained
            else f"trained ({trained}) or evaluated ({len(evaluate_only)})")
    console.print(f"[bold]{recipe}[/]: {runs} {verb} in {seconds:.0f}s: {', '.join(parts)}",
                  highlight=False)
    for s in todo:
        if statuses.get(s.run_id) == "failed":
            why = reasons.get(s.run_id) or records[s.run_id].get("reason") or "no reason recorded"
            console.print(f"  [red]failed[/] {s.method_label} · {s.dataset} · {s.backbone} · seed {s.seed} "
                          f"({s.run_id}): {why}", highlight=False, soft_wrap=True)
    console.print(f"next: calbench report --results {results} --recipe {recipe}", highlight=False,
                  soft_wrap=True)


def _percent(block, key) -> str:
    value = block.get(key) if isinstance(block, dict) else None
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


SUMMARY_COLUMNS = ("dataset", "backbone", "method", "seed", "status", "acc", "ece", "ece (ts)", "time")


def _summary_rows(todo, statuses, records) -> list[list[str]]:
    rows = []
    for s in todo:
        m = records[s.run_id]
        metrics = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
        test, test_ts = metrics.get("test", {}), metrics.get("test_ts", {})
        secs = m.get("wall_time_s")
        rows.append([s.dataset, s.backbone, s.method_label, str(s.seed), statuses.get(s.run_id, "not run"),
                     _percent(test, "acc"), _percent(test, "ece"), _percent(test_ts, "ece"),
                     f"{secs:.1f}s" if isinstance(secs, (int, float)) else ""])
    return rows


def _summary_table(todo, statuses, records, width: int | None = None):
    """One row per run, one line each at any width: every column keeps its natural width except
    the method label, which is cut with an ellipsis to what `width` leaves (never wrapped)."""
    from rich.table import Table

    rows = _summary_rows(todo, statuses, records)
    natural = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(SUMMARY_COLUMNS)]
    method = SUMMARY_COLUMNS.index("method")
    if width is not None:     # each column: one space of padding either side, no borders
        room = width - (sum(natural) - natural[method]) - 2 * len(natural)
        natural[method] = max(12, min(natural[method], room))
    table = Table(title="runs", title_justify="left", box=None, pad_edge=False, header_style="bold underline")
    for col, w in zip(SUMMARY_COLUMNS, natural):
        table.add_column(col, overflow="ellipsis", no_wrap=True, width=w,
                         justify="right" if col in ("seed", "acc", "ece", "ece (ts)", "time") else "left")
    styles = {"done": "green", "failed": "red"}
    for row in rows:
        row[4] = f"[{styles.get(row[4], 'yellow')}]{row[4]}[/]"
        table.add_row(*row)
    return table
