"""Execute one run into its directory: train, then write predictions, history and metrics.json last.

`execute_run` is what every launcher calls (local workers, submitit jobs, distributed ranks). It never
raises for a failing run: the failure (non-finite loss, an exception) is recorded in metrics.json
with status "failed" and the reason, and the status string is returned.
"""

from __future__ import annotations

import platform
import subprocess
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch

from calbench import __version__
from calbench.specs import RunSpec
from calbench.runner.store import is_done, run_dir, save_npz_atomic, write_json_atomic, write_jsonl_atomic


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import numpy

    return {"calbench": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def base_record(spec: RunSpec) -> dict[str, Any]:
    return {"schema": 1, "run_id": spec.run_id, "status": None, "reason": None, "failed_epoch": None,
            "recipe": spec.recipe, "method": spec.method, "method_label": spec.method_label,
            "dataset": spec.dataset, "backbone": spec.backbone, "seed": spec.seed,
            "hparams": spec.hparams, "posthoc": list(spec.posthoc), "order": spec.order,
            "config": spec.to_dict()}


def record_failure(spec: RunSpec, results_dir: str | Path, reason: str, epoch: int | None = None,
                   device: str = "cpu", wall_time: float = 0.0) -> None:
    """Write a failed metrics.json (used by the run itself and by a scheduler whose worker died)."""
    rec = base_record(spec)
    rec.update(status="failed", reason=reason, failed_epoch=epoch, metrics={}, temperature=None,
               epochs_done=epoch or 0, wall_time_s=wall_time, device=device, versions=versions(),
               git_rev=git_revision())
    write_json_atomic(run_dir(results_dir, spec.recipe, spec.run_id) / "metrics.json", rec)


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
    spec = RunSpec.from_dict(spec_dict)
    directory = run_dir(results_dir, spec.recipe, spec.run_id)
    if is_done(directory):
        return "skipped"
    if dist is not None:
        return _execute(spec, directory, results_dir, device, dist, progress)
    with run_lock(directory) as mine:
        if not mine or is_done(directory):   # done meanwhile by the process that held the lock
            return "skipped"
        return _execute(spec, directory, results_dir, device, dist, progress)


def _execute(spec: RunSpec, directory: Path, results_dir: str, device: str, dist,
             progress: Callable[[int, int], None] | None) -> str:
    from calbench.engine.train import NonFiniteLoss, train_run

    is_main = dist is None or dist.is_main
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        for torn in directory.glob(".*.tmp"):   # left by a process killed mid-write
            torn.unlink(missing_ok=True)
        write_json_atomic(directory / "config.json", spec.to_dict())
        stale = directory / "metrics.json"
        if stale.exists():          # a previous failed attempt: it is being recomputed now
            stale.unlink()
    started = time.perf_counter()

    def on_epoch(history):
        write_jsonl_atomic(directory / "history.jsonl", history)

    try:
        out = train_run(spec, directory, device=device, dist=dist, progress=progress,
                        on_epoch=on_epoch if is_main else None)
        if is_main:
            _write_results(spec, directory, out, device, dist, started)
    except NonFiniteLoss as err:
        if is_main:
            record_failure(spec, results_dir, str(err), err.epoch, device, time.perf_counter() - started)
        return "failed"
    except Exception as err:  # noqa: BLE001 - a run's failure must not stop the matrix
        if is_main:
            last = traceback.extract_tb(err.__traceback__)[-1]
            reason = f"{type(err).__name__}: {err} ({Path(last.filename).name}:{last.lineno})"
            record_failure(spec, results_dir, reason.replace("\n", " "), None, device,
                           time.perf_counter() - started)
        return "failed"
    return "done"


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
