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
and the command waits for them; G > 1 ranks are spawned inside the job (`launch`).
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


@dataclass(frozen=True)
class SubmititOptions:
    """What `calbench run --launcher submitit` passes on; `time_min` is the job's wall-clock limit."""

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_run: int = 1
    time_min: int = 60
    array_parallelism: int = 16
    sync_bn: bool = False

    def validate(self) -> "SubmititOptions":
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster: unknown cluster {self.cluster!r} (valid: {', '.join(CLUSTERS)})")
        for name, value in (("--gpus-per-run", self.gpus_per_run), ("--time", self.time_min),
                            ("--array-parallelism", self.array_parallelism)):
            if int(value) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value}")
        return self


@dataclass(frozen=True)
class Submitted:
    run_id: str
    job_id: str


def job_entry(spec_dict: dict, results_dir: str, device: str, gpus: int, sync_bn: bool = False) -> str:
    """What each submitit job (or each task of a multi-task job) runs: one run, maybe distributed."""
    from calbench.runner.distributed_run import run_distributed

    return run_distributed(spec_dict, results_dir, device=device, gpus=gpus, sync_bn=sync_bn)


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
        params.update(tasks_per_node=int(opts.gpus_per_run), slurm_array_parallelism=int(opts.array_parallelism))
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
    args = (str(results_dir), device, int(opts.gpus_per_run), bool(opts.sync_bn))

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
    return _run_local(executor, todo, args, opts.array_parallelism, record, echo, recipe)


def _run_local(executor, todo, args, parallelism, record, echo, recipe) -> list[Submitted]:
    """Local executor: keep at most `parallelism` jobs alive, wait for all of them."""
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
            try:
                statuses[spec["run_id"]] = str(job.result())
            except Exception as err:  # the job crashed outside execute_run's own handling
                statuses[spec["run_id"]] = "failed"
                echo(f"{recipe}/{spec['run_id']}: job {job.job_id} failed: {str(err).splitlines()[0]}")
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    echo(f"{recipe}: {len(out)} local submitit jobs ended: "
         + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return out
