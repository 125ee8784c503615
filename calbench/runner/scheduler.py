"""Schedule runs over local devices with persistent worker processes.

One worker per (device slot x job): `--gpus 0,1 --jobs 2` starts four workers, two seeing only
GPU 0 (CUDA_VISIBLE_DEVICES=0) and two seeing only GPU 1; the CPU gets `jobs` workers with
cores // jobs threads each. Workers are spawned (no fork of a CUDA context), import torch once,
and take runs from the parent one at a time. A worker that dies mid-run (segfault, OOM kill) is
replaced; its run is recorded as failed and the matrix goes on. Results written by other runs are
never touched.
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
    """The worker slots for `--gpus` (None = CPU) and `--jobs` runs at once per device."""
    jobs = max(1, int(jobs))
    if not gpus:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        return [Slot("cpu", {"CUDA_VISIBLE_DEVICES": ""}, "cpu", threads) for _ in range(jobs)]
    threads = max(1, (os.cpu_count() or 1) // (len(gpus) * jobs))
    return [Slot(f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": str(g)}, "cuda", threads)
            for g in gpus for _ in range(jobs)]


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
    from calbench.runner.execute import execute_run

    crash_hook = os.environ.get("CALBENCH_TEST_CRASH_RUN")  # tests: die hard on this run id
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        run_id = spec["run_id"]
        if crash_hook and crash_hook == run_id:
            os._exit(13)

        def progress(done: int, total: int, run_id=run_id) -> None:
            conn.send({"kind": "epoch", "run_id": run_id, "done": done, "total": total})

        started = time.perf_counter()
        status = execute_run(spec, results_dir, device=slot.device, progress=progress)
        conn.send({"kind": "finished", "run_id": run_id, "status": status,
                   "seconds": time.perf_counter() - started})


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


def run_matrix(specs: list[RunSpec], results_dir: str, slots: list[Slot],
               on_event: Callable[[Event], None] | None = None) -> MatrixResult:
    """Run every spec once over the worker slots; returns each run's final status."""
    from multiprocessing.connection import wait

    from calbench.runner.execute import record_failure

    ctx = mp.get_context("spawn")
    pending = [s.to_dict() for s in specs]
    result = MatrixResult()
    notify = on_event or (lambda e: None)

    def start(slot: Slot) -> _Worker:
        parent, child = ctx.Pipe(duplex=True)
        saved = {k: os.environ.get(k) for k in slot.env}
        os.environ.update(slot.env)
        try:
            # not a daemon: a daemonic process may not start the DataLoader worker processes that
            # on-disk datasets need; the `finally` below ends the workers instead
            proc = ctx.Process(target=_worker_main, args=(slot, child, results_dir), daemon=False)
            proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        return _Worker(slot, proc, parent)

    def finish(w: _Worker, event: Event) -> None:
        result.status[event["run_id"]] = event["status"]
        result.seconds[event["run_id"]] = event["seconds"]
        w.current = None
        notify(event)

    def died(w: _Worker) -> None:
        spec = RunSpec.from_dict(w.current)
        w.process.join(timeout=5)
        reason = f"worker process died (exit code {w.process.exitcode}) during the run"
        record_failure(spec, results_dir, reason, device=w.slot.device,
                       wall_time=time.perf_counter() - w.started)
        w.conn.close()
        finish(w, {"kind": "finished", "run_id": spec.run_id, "status": "failed",
                   "seconds": time.perf_counter() - w.started, "reason": reason})
        # the dispatch loop replaces the dead worker when a run is still waiting for it

    workers = [start(slot) for slot in slots[:max(1, min(len(slots), len(pending)))]]
    completed = False
    try:
        while pending or any(w.current for w in workers):
            for i, w in enumerate(list(workers)):
                if w.current is None and pending:
                    if not w.process.is_alive():          # died while idle: replace it first
                        w.conn.close()
                        w = workers[i] = start(w.slot)
                    w.current = pending.pop(0)
                    w.started = time.perf_counter()
                    w.conn.send(w.current)
                    notify({"kind": "started", "run_id": w.current["run_id"], "slot": w.slot.name})
            busy = [w for w in workers if w.current is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
            for i, w in enumerate(list(workers)):
                if w.current is None:
                    continue
                if w.conn in ready:
                    try:
                        event = w.conn.recv()
                    except (EOFError, OSError):
                        died(w)
                        continue
                    if event["kind"] == "finished":
                        finish(w, event)
                    else:
                        notify(event)
                elif w.process.sentinel in ready or not w.process.is_alive():
                    if w.conn.poll():      # its last messages arrive before the exit is noticed
                        continue
                    died(w)
        completed = True
    finally:
        if not completed:       # interrupted (Ctrl-C) or failing: stop the runs now; their
            for w in workers:   # checkpoints are written atomically, a rerun resumes them
                if w.process.is_alive():
                    w.process.terminate()
        for w in workers:
            try:
                if w.process.is_alive():
                    w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.time() + 10
        for w in workers:
            w.process.join(timeout=max(0.1, deadline - time.time()))
            if w.process.is_alive():
                w.process.kill()
    return result
