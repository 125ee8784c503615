"""Execute one run into its directory: train, then write predictions, history and metrics.json last.

`execute_run` is what every launcher calls (local workers, submitit jobs, distributed ranks). It never
raises for a failing run: the failure (non-finite loss, an exception) is recorded in metrics.json
with status "failed" and the reason, and the status string is returned.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import subprocess
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from calbench import __version__
from calbench.specs import RunSpec
from calbench.runner.store import (is_done, json_safe, run_dir, save_npz_atomic, write_json_atomic,
                                   write_jsonl_atomic)


@functools.lru_cache(maxsize=None)
def git_revision() -> str | None:
    """The checkout's commit, read once per process (a `git` subprocess per run cost tens of
    milliseconds; the code a process runs is the code it imported when it started)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions a result depends on; read from the installed packages' metadata, so that recording
    a failure in the parent never imports torch."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"calbench": __version__}
    for package in ("torch", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return {**out, "python": platform.python_version()}


def base_record(spec: RunSpec) -> dict[str, Any]:
    return {"schema": 1, "run_id": spec.run_id, "status": None, "reason": None, "failed_epoch": None,
            "recipe": spec.recipe, "method": spec.method, "method_label": spec.method_label,
            "dataset": spec.dataset, "backbone": spec.backbone, "seed": spec.seed,
            "hparams": spec.hparams, "posthoc": list(spec.posthoc), "order": spec.order,
            "config": spec.to_dict()}


def record_failure(spec: RunSpec, results_dir: str | Path, reason: str, epoch: int | None = None,
                   device: str = "cpu", wall_time: float = 0.0) -> str | None:
    """Write a failed metrics.json (used by the run itself and by a scheduler whose worker died).

    Cannot fail: the value that made the run fail (a NaN learning rate, say) is written as text
    rather than refused by the JSON encoder, and a store that cannot be written (a full disk, a
    read-only folder) is reported in the returned one-line message instead of raised (None when
    the record was written). Nothing is marked done either way."""
    rec = base_record(spec)
    rec.update(status="failed", reason=reason, failed_epoch=epoch, metrics={}, temperature=None,
               epochs_done=epoch or 0, wall_time_s=wall_time, device=device, versions=versions(),
               git_rev=git_revision())
    path = run_dir(results_dir, spec.recipe, spec.run_id) / "metrics.json"
    try:
        write_json_atomic(path, json_safe(rec))
    except OSError as err:
        return f"could not record the failure: {describe_os_error(err, path)}"
    return None


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line for a failed store write: "no space left on device writing <file>" for ENOSPC."""
    where = err.filename or path
    if err.errno == errno.ENOSPC:
        return f"no space left on device writing {where}"
    return f"{err.strerror or type(err).__name__} writing {where}" if where else str(err)


def failure_reason(err: BaseException, directory: Path) -> str:
    """The one-line reason recorded for a run that raised `err`.

    A full disk shows up as an OSError (our own writes) or as torch's zip writer failing inside
    torch.save ("file write failed", "unexpected pos"): both are named as what they are, with the
    file, instead of the low-level message."""
    if isinstance(err, OSError) and err.errno is not None:
        return describe_os_error(err)
    text = str(err)
    if ("PytorchStreamWriter" in text or "unexpected pos" in text) and _disk_full(directory):
        return f"no space left on device writing {directory / 'checkpoint.pt'}"
    last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(err).__name__}: {text}{where}".replace("\n", " ")


def _disk_full(directory: Path) -> bool:
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


@contextmanager
def run_lock(directory: Path):
    """Yield True when this process holds the run directory's lock, False when another live process
    does (a second `calbench run` on the same results). flock is released by the kernel when its
    holder dies, so a kill -9 never leaves a stale lock."""
    try:
        import fcntl
    except ImportError:          # no flock (Windows): no cross-process exclusion
        yield True
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def execute_run(spec_dict: dict, results_dir: str, device: str = "cpu", dist=None,
                progress: Callable[[int, int], None] | None = None) -> str:
    """Train one run unless it is already done; returns "done", "failed" or "skipped".

    "skipped": the run is done, or another process is training it right now (its directory lock is
    held), so two `calbench run` commands on the same results never train one run twice. Data-parallel
    ranks take no lock (every rank must enter training together)."""
    return execute_run_reporting(spec_dict, results_dir, device, dist, progress)[0]


def execute_run_reporting(spec_dict: dict, results_dir: str, device: str = "cpu", dist=None,
                          progress: Callable[[int, int], None] | None = None,
                          threads: int | None = None) -> tuple[str, str | None]:
    """`execute_run`, plus the one-line reason of a failure (None otherwise) for the caller to show.
    `threads`: torch intra-op threads of a CPU run (None: the engine's rule, CALBENCH_THREADS or one)."""
    spec = RunSpec.from_dict(spec_dict)
    directory = run_dir(results_dir, spec.recipe, spec.run_id)
    if dist is not None:
        if is_done(directory):
            return "skipped", None
        return _execute(spec, directory, results_dir, device, dist, progress, threads)
    try:
        with run_lock(directory) as mine:
            if not mine:
                return "skipped", None
            if is_done(directory):   # done before, or meanwhile by the process that held the lock
                return _evaluate_only(spec, directory, device)
            status = _execute(spec, directory, results_dir, device, dist, progress, threads)
            return _evaluate_only(spec, directory, device, "done") if status[0] == "done" else status
    except OSError as err:      # the run directory or its lock file cannot be created
        return "failed", describe_os_error(err)


def _evaluate_only(spec: RunSpec, directory: Path, device: str, nothing: str = "skipped") -> tuple[str, str | None]:
    """Evaluate the recipe's evaluation sets a done run lacks, from its model.pt, without training
    (calbench.runner.evaluate_sets); `nothing` is the status when none is missing. A failure here
    leaves the training record as it is and is reported as failed with its reason."""
    from calbench.runner.evaluate_sets import evaluate_missing, missing_entries

    if not missing_entries(spec, directory):
        return nothing, None
    try:
        evaluate_missing(spec, directory, device)
    except Exception as err:  # noqa: BLE001 - one run's evaluation must not stop the matrix
        return "failed", f"evaluation sets: {failure_reason(err, directory)}"
    return "done", None


def _prepare(spec: RunSpec, directory: Path) -> None:
    """Clear what a killed or failed attempt left (torn temporary files, a failed metrics.json:
    the run is being recomputed now) and write config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for torn in directory.glob(".*.tmp"):
        torn.unlink(missing_ok=True)
    (directory / "metrics.json").unlink(missing_ok=True)
    write_json_atomic(directory / "config.json", json_safe(spec.to_dict()))


def _execute(spec: RunSpec, directory: Path, results_dir: str, device: str, dist,
             progress: Callable[[int, int], None] | None, threads: int | None = None) -> tuple[str, str | None]:
    """Train and write the results; every failure (preparing the directory included) is recorded."""
    from calbench.engine.train import NonFiniteLoss, train_run

    is_main = dist is None or dist.is_main
    started = time.perf_counter()

    def on_epoch(history):
        write_jsonl_atomic(directory / "history.jsonl", history)

    epoch = None
    try:
        if is_main:
            _prepare(spec, directory)
        out = train_run(spec, directory, device=device, dist=dist, progress=progress,
                        on_epoch=on_epoch if is_main else None, threads=threads)
        if is_main:
            _write_results(spec, directory, out, device, dist, started)
        return "done", None
    except NonFiniteLoss as err:
        reason, epoch = str(err), err.epoch
    except Exception as err:  # noqa: BLE001 - a run's failure must not stop the matrix
        reason = failure_reason(err, directory)
    if is_main:
        unrecorded = record_failure(spec, results_dir, reason, epoch, device, time.perf_counter() - started)
        if unrecorded:
            reason = f"{reason} ({unrecorded})"
    return "failed", reason


def _write_results(spec: RunSpec, directory: Path, out, device: str, dist, started: float) -> None:
    """predictions, splits and history first, metrics.json last (its presence means done)."""
    save_npz_atomic(directory / "predictions.npz", **out.predictions)
    save_npz_atomic(directory / "splits.npz", **out.splits)
    write_jsonl_atomic(directory / "history.jsonl", out.history)
    rec = base_record(spec)
    rec.update(status="done", metrics=out.metrics, temperature=out.temperature,
               epochs_done=out.epochs_done, wall_time_s=round(time.perf_counter() - started, 3),
               device=device if dist is None else f"{device} x{dist.world_size}",
               versions=versions(), git_rev=git_revision(), **out.extra)
    write_json_atomic(directory / "metrics.json", rec)
    (directory / "checkpoint.pt").unlink(missing_ok=True)
