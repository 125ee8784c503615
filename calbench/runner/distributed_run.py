"""Train one run with data-parallel processes: the entry `calbench run --gpus-per-run G` and every
submitit job call.

The process-group plumbing (`launch`, `context_from_env`, `DistContext`) lives in
`calbench.engine.distributed`; this module only decides how one run is spread over processes and
hands each rank to `execute_run`, so the engine never imports the runner.
"""

from __future__ import annotations

import os

__all__ = ["run_distributed", "rank_threads"]


def rank_threads(processes: int) -> int:
    """torch intra-op threads for one of `processes` CPU processes sharing this machine's cores.

    On a loaded CPU, more threads than cores per process makes every op slower (threads wait for
    each other at every parallel region), so the cores are shared out and never oversubscribed.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(processes)))


def _execute_rank(spec_dict: dict, results_dir: str, *, dist, device: str, threads: int = 0) -> str:
    """One spawned rank: pin its torch threads (CPU ranks share the cores), then train."""
    import torch

    from calbench.runner.execute import execute_run

    if threads > 0 and not str(device).startswith("cuda"):
        torch.set_num_threads(threads)
    return execute_run(spec_dict, results_dir, device=device, dist=dist)


def run_distributed(spec_dict: dict, results_dir: str, device: str = "cpu", gpus: int = 1,
                    sync_bn: bool = False, threads: int = 0) -> str:
    """Train one run with `gpus` data-parallel processes; returns execute_run's status.

    Inside a process group started elsewhere (torchrun, submitit tasks_per_node > 1) this process
    is one rank of it; otherwise `gpus` > 1 spawns the ranks here and `gpus` == 1 trains in-process.
    `threads` > 0 is this process's share of the CPU (the ranks it spawns split it among them);
    0 leaves torch's own default.
    """
    import torch
    import torch.distributed as torch_dist

    from calbench.engine.distributed import context_from_env, env_world_size, launch
    from calbench.runner.execute import execute_run

    on_cpu = not str(device).startswith("cuda")
    if env_world_size() > 1:
        ctx = context_from_env(device, sync_bn=sync_bn)
        if threads > 0 and on_cpu:
            torch.set_num_threads(threads)
        try:
            return execute_run(spec_dict, results_dir, device=ctx.device, dist=ctx)
        finally:
            if torch_dist.is_initialized():
                torch_dist.destroy_process_group()
    if int(gpus) <= 1:
        if threads > 0 and on_cpu:
            torch.set_num_threads(threads)
        return execute_run(spec_dict, results_dir, device=device)
    per_rank = max(1, threads // int(gpus)) if threads > 0 else rank_threads(int(gpus))
    return launch(_execute_rank, int(gpus), spec_dict, results_dir, device=device, sync_bn=sync_bn,
                  threads=per_rank)
