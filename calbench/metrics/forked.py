"""Independent tasks in processes forked from this one: the bootstrap's resample blocks on several cores.

A forked child starts with this process's memory as it is (copy-on-write): the sorted samples and
every structure the first bootstrap block built are shared, not rebuilt or sent. Processes rather
than threads because the blocks' Python-level work holds the GIL (two threads ran the 50,000 x 200
bootstrap 1.3-1.4x faster than one, two processes 1.6-1.9x, same CPU time). Each child runs one
task and sends its (pickled) result through a pipe; the parent runs the first task meanwhile.
Claims hands out work items one at a time across the processes, so that a process that gets less
CPU (a loaded machine) takes fewer of them.

Threads: while children run, every OpenMP / BLAS pool of the process is limited to one thread
(threadpoolctl, which scikit-learn requires): N processes then use N cores, and a child never
enters an OpenMP region with more than one thread (libgomp's pool does not survive fork: a child
whose region wants the parent's threads waits for them forever). Without fork (not Linux; macOS'
system libraries are not fork-safe) or without threadpoolctl, the tasks run one after another here.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
import warnings


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


LOADAVG = "/proc/loadavg"


def idle_cores(reads: int = 5, interval: float = 0.01) -> int:
    """available_cores() less the other processes runnable now, at least 1: on a machine whose
    cores other jobs hold, a second worker only adds its first-touch page faults (50,000 x 200,
    B = 1000 at load 2.8 on 2 cores: 7.5 s with 2 workers, 5.1 s with 1; 3.4 s vs 4.8 s when idle).
    The kernel's runnable count (LOADAVG's fourth field) is instantaneous and counts threads, this
    process's own too (OpenBLAS's threads spin for a while after numpy loads: counted as others,
    they made an idle 2-core machine look busy), so each read subtracts this process's runnable
    threads; the median of a few reads `interval` seconds apart. available_cores() where the
    count cannot be read."""
    cores, counts = available_cores(), []
    try:
        for i in range(reads):
            with open(LOADAVG) as f:
                runnable = int(f.read().split()[3].split("/")[0])
            counts.append(runnable - own_runnable_threads())
            if i + 1 < reads:
                time.sleep(interval)
    except (OSError, ValueError, IndexError):
        return cores
    others = sorted(counts)[len(counts) // 2]
    return max(1, min(cores, cores - others))


def own_runnable_threads(tasks: str = "/proc/self/task") -> int:
    """This process's threads in state R (running or runnable), at least 1 (the caller); 1 where
    /proc cannot be read."""
    running = 0
    try:
        for tid in os.listdir(tasks):
            try:
                with open(os.path.join(tasks, tid, "stat")) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue   # a thread that ended meanwhile
            running += state == "R"
    except OSError:
        return 1
    return max(1, running)


def can_fork() -> bool:
    if not (sys.platform.startswith("linux") and hasattr(os, "fork")):
        return False
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


class Claims:
    """Numbers first, first + 1, ..., one per call of the instance, each handed out once across this
    process and the children forked after it was made: a lock-protected integer in shared memory
    (shared=True, where fork exists), else a plain counter."""

    def __init__(self, first: int, shared: bool = False):
        self._next = first
        self._shared = None
        if shared and can_fork():
            import multiprocessing

            self._shared = multiprocessing.get_context("fork").Value("q", first)

    def __call__(self) -> int:
        if self._shared is None:
            self._next += 1
            return self._next - 1
        with self._shared.get_lock():
            taken = self._shared.value
            self._shared.value = taken + 1
        return taken


def run_forked(tasks: list) -> list:
    """[task() for task in tasks]: tasks[1:] each in a child forked before tasks[0] runs here (so a
    task that reads shared state sees it as it was at the call). A child's exception is raised here;
    a child that dies without a result raises RuntimeError; on any error every child is ended."""
    if len(tasks) <= 1 or not can_fork():
        return [task() for task in tasks]
    from threadpoolctl import threadpool_limits

    children: list[tuple[int, int]] = []
    with threadpool_limits(1):
        try:
            for task in tasks[1:]:
                children.append(_fork(task))
            results = [tasks[0]()]
            while children:
                results.append(_result(*children.pop(0)))
            return results
        finally:
            for pid, fd in children:  # only after an error: end and reap the rest
                os.close(fd)
                _reap(pid, kill=True)


def _fork(task) -> tuple[int, int]:
    """Fork a child that runs task() and writes (ok, result or exception) pickled to a pipe; the
    child leaves by os._exit, never returning into the caller's code. Returns (pid, read end)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns when a process with threads forks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        os.close(write_end)
        return pid, read_end
    status = 1
    try:
        os.close(read_end)
        try:
            payload = pickle.dumps((True, task()), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as err:  # noqa: BLE001  (sent to the parent, which raises it)
            payload = _pickled_error(err)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        status = 0
    finally:
        os._exit(status)


def _pickled_error(err: BaseException) -> bytes:
    try:
        return pickle.dumps((False, err), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001  (an exception that does not pickle: its text)
        return pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}")))


def _result(pid: int, fd: int):
    """The child's result (or its exception, raised), the child reaped in every case."""
    payload = b""
    try:
        with os.fdopen(fd, "rb") as pipe:
            payload = pipe.read()
    finally:
        status = _reap(pid, kill=not payload)  # no payload: it died, or this read was interrupted
    if not payload:
        raise RuntimeError(f"bootstrap worker process {pid} ended without a result "
                           f"(wait status {status}: killed, or out of memory?)")
    ok, value = pickle.loads(payload)
    if not ok:
        raise value
    return value


def _reap(pid: int, kill: bool) -> int:
    """Wait for child `pid` (ended first with SIGKILL when `kill`); its wait status."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return os.waitpid(pid, 0)[1]
