"""Worker processes for the report's bootstrap: independent table cells computed in parallel.

Every cell's interval is a pure function of its predictions, the keys and the generator seed
(calbench.metrics' bootstrap), so a cell computed in a worker is bit-identical to one computed in the
parent (tested); only the wall time changes. Workers come from a fresh interpreter ("forkserver" on
Linux, "spawn" elsewhere), never from a fork of the report process, whose OpenMP / BLAS thread pools
may already be running; each worker limits its numerical libraries to one thread, so N workers use N
cores. Small jobs stay in the parent: starting a worker (importing numpy, scipy and calbench.metrics)
costs about a second, so the pool is used only when the estimated work is well above that.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

# Sample x resample x metric evaluations below which a job runs in the parent: about 1-2 s of
# bootstrap work here, the order of a worker's start-up.
PARALLEL_WORK = 50_000_000
_requested: int | None = None


def machine_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_workers(count: int | None) -> None:
    """Fix the number of worker processes (None: the machine's cores; 1: everything in this process)."""
    global _requested
    _requested = count


def worker_count(jobs: int, work: float) -> int:
    """Workers for `jobs` independent jobs totalling `work` sample x resample x metric evaluations."""
    wanted = _requested if _requested is not None else machine_cores()
    if _requested is None and work < PARALLEL_WORK:
        return 1
    return max(1, min(wanted, jobs))


def _one_thread() -> None:
    """Worker start: one thread for BLAS / OpenMP (the pool supplies the parallelism)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    import numpy  # noqa: F401  (load BLAS before limiting it)
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
    except ImportError:
        return  # the variables above then take effect for the libraries loaded later
    threadpool_limits(1)


def _context():
    return multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")


def map_jobs(fn, jobs: list[tuple[tuple, dict]], costs: list[float]) -> list:
    """[fn(*args, **kwargs) for args, kwargs in jobs], in order; in worker processes when the summed
    cost (sample x resample x metric evaluations) is worth it, the costliest submitted first so that
    the workers finish together. fn must be a module-level function, its arguments picklable."""
    workers = worker_count(len(jobs), sum(costs))
    if workers <= 1:
        return [fn(*args, **kwargs) for args, kwargs in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -costs[i])
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_one_thread) as pool:
        futures = {i: pool.submit(fn, *jobs[i][0], **jobs[i][1]) for i in order}
        return [futures[i].result() for i in range(len(jobs))]
