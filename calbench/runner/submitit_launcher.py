"""`calbench run --launcher submitit`: every run of the matrix becomes one submitit job.

The jobs call the same `execute_run` as local runs, so they write the same run directories
(results/<recipe>/<run id>/) under the same run ids, and runs that are already done are filtered
out BEFORE submitting (rerunning a finished recipe submits nothing); runs with a submitted job that
has not ended yet are not submitted twice. Each submitted run gets `job.json` (job id, cluster,
submitit folder) beside its results so that `calbench status` can show queued / running jobs.
submitit's own logs and pickles go to results/<recipe>/.submitit/.

SLURM: one job array (`executor.map_array`), at most `array_parallelism` tasks at once; the
command returns after submitting. A run with `gpus_per_run` G > 1 gets one node with G GPUs and
G tasks, one torch.distributed rank each (`calbench.runner.distributed_run.run_distributed`).
Local (`cluster="local"`, submitit's LocalExecutor): at most `array_parallelism` jobs at a time,
and the command waits for them; G > 1 ranks are spawned inside the job (`launch`). Unless given,
the local parallelism fits the machine (`local_parallelism`: cores, memory, GPUs) and each job
gets its share of the cores as torch threads; SLURM keeps its own default and the allocation.
Job results are read from the run's metrics.json, never from submitit's result pickle.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from calbench.errors import ConfigError

CLUSTERS = ("slurm", "local")
SUBMITIT_DIR = ".submitit"
SLURM_ARRAY_PARALLELISM = 64   # the scheduler, not this machine, decides what runs at once
RUN_MEMORY_GB = 1.5            # resident memory of one CPU job (a torch interpreter, a small model
                               # and its data); larger models on disk need more: pass --array-parallelism


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _available_memory_gb() -> float | None:
    """MemAvailable from /proc/meminfo (Linux), else physical memory; None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (AttributeError, OSError, ValueError):
        return None


def local_parallelism(device: str, gpus_per_run: int = 1, cores: int | None = None,
                      memory_gb: float | None = None, gpus: int | None = None) -> int:
    """How many local submitit jobs fit this machine at once: min(cores / processes per job,
    available memory / RUN_MEMORY_GB per process, GPUs / GPUs per job on CUDA), at least 1.

    A job of G > 1 ranks is G processes. More jobs than that only queue for the same cores and
    memory (64 at once exhausted a 2-core, 24 GB machine)."""
    per_job = max(1, int(gpus_per_run))
    cores = _cores() if cores is None else cores
    memory_gb = _available_memory_gb() if memory_gb is None else memory_gb
    limits = [max(1, cores // per_job)]
    if memory_gb is not None:
        limits.append(int(memory_gb // (RUN_MEMORY_GB * per_job)))
    if str(device).startswith("cuda"):
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        limits.append(gpus // per_job)
    return max(1, min(limits))


@dataclass(frozen=True)
class SubmititOptions:
    """What `calbench run --launcher submitit` passes on; `time_min` is the job's wall-clock limit."""

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_run: int = 1
    time_min: int = 60
    array_parallelism: int | None = None   # None: SLURM_ARRAY_PARALLELISM, or what fits locally
    sync_bn: bool = False

    def validate(self) -> "SubmititOptions":
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster: unknown cluster {self.cluster!r} (valid: {', '.join(CLUSTERS)})")
        for name, value in (("--gpus-per-run", self.gpus_per_run), ("--time", self.time_min),
                            ("--array-parallelism", self.array_parallelism)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value}")
        return self

    def parallelism(self, device: str) -> int:
        """Jobs at once: as given, else SLURM's default, else what fits this machine."""
        if self.array_parallelism is not None:
            return int(self.array_parallelism)
        if self.cluster == "slurm":
            return SLURM_ARRAY_PARALLELISM
        return local_parallelism(device, self.gpus_per_run)


@dataclass(frozen=True)
class Submitted:
    run_id: str
    job_id: str


def job_entry(spec_dict: dict, results_dir: str, device: str, gpus: int, sync_bn: bool = False,
              threads: int = 0) -> str:
    """What each submitit job (or each task of a multi-task job) runs: one run, maybe distributed.

    `threads`: this job's share of the cores (local jobs share one machine); 0 on SLURM, where the
    job's allocation already bounds what torch sees."""
    from calbench.runner.distributed_run import run_distributed

    return run_distributed(spec_dict, results_dir, device=device, gpus=gpus, sync_bn=sync_bn,
                           threads=threads)


def job_device(opts: SubmititOptions, device: str | None) -> str:
    """The device the jobs train on: as asked, else CUDA on SLURM and the CPU locally."""
    if device:
        return device
    return "cuda" if opts.cluster == "slurm" else "cpu"


def make_executor(folder: Path, opts: SubmititOptions, device: str, name: str = "calbench"):
    """A submitit executor for the cluster; SLURM runs get G tasks (one rank each) and G GPUs."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
    on_gpu = str(device).startswith("cuda")
    params: dict = {"name": name, "timeout_min": int(opts.time_min), "nodes": 1}
    if opts.cluster == "slurm":
        params.update(tasks_per_node=int(opts.gpus_per_run), slurm_array_parallelism=opts.parallelism(device))
        if on_gpu:
            params["gpus_per_node"] = int(opts.gpus_per_run)
        if opts.partition:
            params["slurm_partition"] = opts.partition
    else:
        params["tasks_per_node"] = 1  # ranks are spawned inside the job
        if on_gpu:
            params["gpus_per_node"] = int(opts.gpus_per_run)
    executor.update_parameters(**params)
    return executor


def _write_job_json(run_dir: Path, obj: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".job.json.tmp"
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, run_dir / "job.json")


def runs_to_submit(specs: list[dict], results_dir: str | Path, recipe: str) -> list[dict]:
    """The specs whose run is neither done nor held by a submitted job that has not ended."""
    from calbench.runner.store import run_state

    keep = []
    for spec in specs:
        run_dir = Path(results_dir) / recipe / spec["run_id"]
        state, _ = run_state(run_dir)
        if state == "done":
            continue
        if state in ("queued", "running") and (run_dir / "job.json").exists():
            continue
        keep.append(spec)
    return keep


def submit_runs(specs: list[dict], results_dir: str | Path, recipe: str, opts: SubmititOptions,
                device: str | None = None, echo: Callable[[str], None] = print) -> list[Submitted]:
    """Submit the not-yet-done runs of `specs` (RunSpec.to_dict() dicts); returns what was submitted.

    SLURM returns once the array is queued; the local cluster returns when every job has ended.
    """
    opts.validate()
    results_dir = Path(results_dir).resolve()
    todo = runs_to_submit(specs, results_dir, recipe)
    if not todo:
        echo(f"{recipe}: nothing to submit ({len(specs)} runs done or already submitted)")
        return []
    device = job_device(opts, device)
    folder = results_dir / recipe / SUBMITIT_DIR
    executor = make_executor(folder, opts, device, name=f"calbench-{recipe}")
    parallelism = opts.parallelism(device)
    threads = 0 if opts.cluster == "slurm" else max(1, _cores() // parallelism)
    args = (str(results_dir), device, int(opts.gpus_per_run), bool(opts.sync_bn), threads)

    def record(spec: dict, job) -> Submitted:
        _write_job_json(results_dir / recipe / spec["run_id"], {
            "job_id": str(job.job_id), "cluster": opts.cluster, "folder": SUBMITIT_DIR,
            "submitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "gpus_per_run": int(opts.gpus_per_run), "partition": opts.partition,
            "time_min": int(opts.time_min), "device": device})
        return Submitted(spec["run_id"], str(job.job_id))

    if opts.cluster == "slurm":
        jobs = executor.map_array(job_entry, todo, *([a] * len(todo) for a in args))
        out = [record(spec, job) for spec, job in zip(todo, jobs)]
        echo(f"{recipe}: submitted {len(out)} runs as a SLURM job array "
             f"({out[0].job_id.split('_')[0]}); follow with `calbench status`")
        return out
    echo(f"{recipe}: {len(todo)} local submitit jobs, at most {parallelism} at once")
    return _run_local(executor, todo, args, parallelism, record, echo, recipe, results_dir)


def _run_local(executor, todo, args, parallelism, record, echo, recipe, results_dir) -> list[Submitted]:
    """Local executor: keep at most `parallelism` jobs alive, wait for all of them.

    A job's outcome is its run's state in the store (metrics.json), not submitit's result pickle:
    nothing in a results directory is ever unpickled by this process."""
    from calbench.runner.store import run_state

    pending, live, out, statuses = list(todo), [], [], {}
    while pending or live:
        while pending and len(live) < parallelism:
            spec = pending.pop(0)
            job = executor.submit(job_entry, spec, *args)
            out.append(record(spec, job))
            live.append((spec, job))
        time.sleep(0.2)
        for spec, job in [item for item in live if item[1].done()]:
            live.remove((spec, job))
            state, reason = run_state(Path(results_dir) / recipe / spec["run_id"])
            statuses[spec["run_id"]] = "done" if state == "done" else "failed"
            if state != "done":
                echo(f"{recipe}/{spec['run_id']}: job {job.job_id} failed: {reason or state}")
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    echo(f"{recipe}: {len(out)} local submitit jobs ended: "
         + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return out
