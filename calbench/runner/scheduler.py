"""Schedule runs over local devices with persistent worker processes.

One worker per (device slot x job): `--gpus 0,1 --jobs 2` starts four workers, two seeing only
GPU 0 (CUDA_VISIBLE_DEVICES=0) and two seeing only GPU 1; the CPU gets `jobs` workers. Threads,
one rule for every local run: CALBENCH_THREADS when set, else the cores shared out,
cores // (jobs x GPUs) torch intra-op threads per run (never oversubscribed). Workers are spawned
(no fork of a CUDA context, nor of a parent whose torch thread pools may have started), import
torch once, and take runs from the parent one at a time. A worker that dies mid-run (segfault,
OOM kill) is replaced; its run is recorded as failed and the matrix goes on. Results written by
other runs are never touched.

A matrix of one pending run on the CPU is trained in the parent itself (`_run_in_parent`): the
parent has imported torch already to check the recipe, and a worker would import it a second time
and tear it down again (seconds, against a digits run of a few). Its failures are recorded the
same way (execute_run never raises for a failing run); only a hard crash of the process is not
isolated, which is what a worker is for when there are other runs to protect.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from calbench.specs import RunSpec

Event = dict[str, Any]


@dataclass
class Slot:
    name: str               # "cpu" or "cuda:<id>"
    env: dict[str, str]     # extra environment of its workers
    device: str             # the device string the worker trains on
    threads: int


def plan_slots(gpus: list[int] | None, jobs: int) -> list[Slot]:
    """The worker slots for `--gpus` (None = CPU) and `--jobs` runs at once per device.

    Each worker gets an equal share of the cores as torch intra-op threads (and as OMP/MKL threads
    through the environment): oversubscribed cores make every op wait at each parallel region."""
    jobs = max(1, int(jobs))
    told = _threads_told()
    if not gpus:
        threads = told or max(1, _cores() // jobs)
        return [Slot("cpu", {"CUDA_VISIBLE_DEVICES": "", **_thread_env(threads)}, "cpu", threads)
                for _ in range(jobs)]
    threads = told or max(1, _cores() // (len(gpus) * jobs))
    return [Slot(f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": str(g), **_thread_env(threads)}, "cuda", threads)
            for g in gpus for _ in range(jobs)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _threads_told() -> int:
    """CALBENCH_THREADS when it is a positive integer, else 0 (not told)."""
    text = os.environ.get("CALBENCH_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 0


def _thread_env(threads: int) -> dict[str, str]:
    """The worker's environment for `threads`: OpenMP/MKL, and CALBENCH_THREADS, which the engine
    reads (calbench.engine.build.configure_threads), so the worker and the engine agree."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "CALBENCH_THREADS": str(threads)}


def _worker_main(slot: Slot, conn, results_dir: str) -> None:
    """Worker loop: receive a spec, run it, report over its own pipe; None ends the worker.

    Events are sent synchronously from this thread over a private pipe (each message well under
    PIPE_BUF, so a single atomic write): a worker that dies can never leave a half-written message
    that would block the parent or another worker.
    """
    import signal

    import torch

    # Ctrl-C reaches the whole process group: the parent alone decides (it ends the workers), so
    # an interrupt does not print one traceback per worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(slot.threads)
    from calbench.runner.execute import execute_run_reporting

    crash_hook = os.environ.get("CALBENCH_TEST_CRASH_RUN")  # tests: die hard on this run id
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            spec = None
        if spec is None:
            _exit_now()
        run_id = spec["run_id"]
        if crash_hook and crash_hook == run_id:
            os._exit(13)

        def progress(done: int, total: int, run_id=run_id) -> None:
            conn.send({"kind": "epoch", "run_id": run_id, "done": done, "total": total})

        started = time.perf_counter()
        status, reason = execute_run_reporting(spec, results_dir, device=slot.device, progress=progress,
                                               threads=slot.threads)
        conn.send({"kind": "finished", "run_id": run_id, "status": status, "reason": reason,
                   "seconds": time.perf_counter() - started})


def _exit_now() -> None:
    """End an idle worker without the interpreter's teardown (a second or more with torch loaded):
    between runs nothing is open (every store file was written atomically and fsynced, the run's
    DataLoader workers are joined), so flushing the standard streams is all that is left."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


@dataclass
class _Worker:
    slot: Slot
    process: Any
    conn: Any
    current: dict | None = None
    started: float = 0.0


@dataclass
class MatrixResult:
    status: dict[str, str] = field(default_factory=dict)     # run_id -> done | failed | skipped
    seconds: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)    # run_id -> why (failed runs)


class _Pool:
    """The parent's side of the workers: start, feed, listen, replace the dead, stop."""

    def __init__(self, results_dir: str, notify: Callable[[Event], None]):
        self.ctx = mp.get_context("spawn")
        self.results_dir = results_dir
        self.notify = notify
        self.result = MatrixResult()
        self.workers: list[_Worker] = []

    def start(self, slot: Slot) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        saved = {k: os.environ.get(k) for k in slot.env}
        os.environ.update(slot.env)
        try:
            # not a daemon: a daemonic process may not start the DataLoader worker processes that
            # on-disk datasets need; `stop` ends the workers instead
            proc = self.ctx.Process(target=_worker_main, args=(slot, child, self.results_dir), daemon=False)
            proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        return _Worker(slot, proc, parent)

    def dispatch(self, pending: list[dict]) -> None:
        """Give every idle worker the next run (replacing a worker that died while idle)."""
        for i, w in enumerate(list(self.workers)):
            if w.current is None and pending:
                if not w.process.is_alive():
                    w.conn.close()
                    w = self.workers[i] = self.start(w.slot)
                w.current = pending.pop(0)
                w.started = time.perf_counter()
                w.conn.send(w.current)
                self.notify({"kind": "started", "run_id": w.current["run_id"], "slot": w.slot.name})

    def listen(self) -> None:
        """Wait up to half a second for events or deaths of the busy workers and handle them."""
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.current is not None]
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
        for w in busy:
            if w.conn in ready:
                try:
                    event = w.conn.recv()
                except (EOFError, OSError):
                    self.died(w)
                    continue
                if event["kind"] == "finished":
                    self.finish(w, event)
                else:
                    self.notify(event)
            elif (w.process.sentinel in ready or not w.process.is_alive()) and not w.conn.poll():
                self.died(w)        # (its last messages, if any, are read before its exit)

    def finish(self, w: _Worker, event: Event) -> None:
        rid = event["run_id"]
        self.result.status[rid] = event["status"]
        self.result.seconds[rid] = event["seconds"]
        if event.get("reason"):
            self.result.reasons[rid] = event["reason"]
        w.current = None
        self.notify(event)

    def died(self, w: _Worker) -> None:
        """Record the dead worker's run as failed; the dispatch loop replaces the worker."""
        from calbench.runner.execute import record_failure

        spec = RunSpec.from_dict(w.current)
        w.process.join(timeout=5)
        reason = f"worker process died (exit code {w.process.exitcode}) during the run"
        written = record_failure(spec, self.results_dir, reason, device=w.slot.device,
                                 wall_time=time.perf_counter() - w.started)
        if written is not None:     # the failure itself could not be recorded (e.g. a full disk)
            reason = f"{reason}; {written}"
        w.conn.close()
        self.finish(w, {"kind": "finished", "run_id": spec.run_id, "status": "failed",
                        "seconds": time.perf_counter() - w.started, "reason": reason})

    def stop(self, completed: bool) -> None:
        """End every worker; when interrupted (Ctrl-C) or failing, stop their runs now: their
        checkpoints are written atomically and a rerun resumes them."""
        for w in self.workers:
            if not completed and w.process.is_alive():
                w.process.terminate()
        for w in self.workers:
            try:
                if w.process.is_alive():
                    w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.time() + 10
        for w in self.workers:
            w.process.join(timeout=max(0.1, deadline - time.time()))
            if w.process.is_alive():
                w.process.kill()


def run_matrix(specs: list[RunSpec], results_dir: str, slots: list[Slot],
               on_event: Callable[[Event], None] | None = None) -> MatrixResult:
    """Run every spec once over the worker slots; returns each run's final status."""
    pending = [s.to_dict() for s in specs]
    notify = on_event or (lambda e: None)
    crash_test = os.environ.get("CALBENCH_TEST_CRASH_RUN")     # tests of a worker's death need one
    if len(pending) == 1 and slots and slots[0].device == "cpu" and not crash_test:
        return _run_in_parent(pending[0], results_dir, slots[0], notify)
    pool = _Pool(results_dir, notify)
    pool.workers = [pool.start(slot) for slot in slots[:max(1, min(len(slots), len(pending)))]]
    completed = False
    try:
        while pending or any(w.current for w in pool.workers):
            pool.dispatch(pending)
            pool.listen()
        completed = True
    finally:
        pool.stop(completed)
    return pool.result


def _run_in_parent(spec: dict, results_dir: str, slot: Slot, notify: Callable[[Event], None]) -> MatrixResult:
    """Train the only pending CPU run in this process, with the events a worker would send. The
    run's lock, failure record and resume checkpoints are execute_run's, as in a worker; Ctrl-C
    raises KeyboardInterrupt here, and the lock is released on the way out."""
    from calbench.runner.execute import execute_run_reporting

    run_id = spec["run_id"]

    def progress(done: int, total: int) -> None:
        notify({"kind": "epoch", "run_id": run_id, "done": done, "total": total})

    result = MatrixResult()
    notify({"kind": "started", "run_id": run_id, "slot": slot.name})
    started = time.perf_counter()
    status, reason = execute_run_reporting(spec, results_dir, device=slot.device, progress=progress,
                                           threads=slot.threads)
    result.status[run_id], result.seconds[run_id] = status, time.perf_counter() - started
    if reason:
        result.reasons[run_id] = reason
    notify({"kind": "finished", "run_id": run_id, "status": status, "reason": reason,
            "seconds": result.seconds[run_id]})
    return result
