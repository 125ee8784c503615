"""Data-parallel training of one run with torch.distributed (one process per GPU, or gloo on CPU).

The engine (`calbench.engine.train.train_run`) only uses the members of `DistContext` below, so
that everything distributed lives here. Each rank reads its own shard of the train split through
`torch.utils.data.DistributedSampler` (re-seeded every epoch with `set_epoch`), gradients are
averaged by DDP, and validation logits are gathered from every rank before `Method.end_epoch`,
so adaptive multipliers (CALS-HR, CALS-ALM) are identical on every rank.

Ways to get a `DistContext`:
- `launch(fn, world_size, ...)`: spawn `world_size` local processes (torch.multiprocessing);
  gloo on CPU (over the loopback interface), nccl on CUDA; rendezvous through a temporary file.
- `context_from_env()`: join a group whose processes someone else started: torchrun
  (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*) or a submitit job with several tasks (SLURM or local).
Training one run over such processes (`calbench.runner.distributed_run.run_distributed`) belongs
to the runner: this module knows nothing of runs, results or the recipe.
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as torch_dist
from torch import nn

__all__ = [
    "DistContext", "launch", "context_from_env", "env_world_size", "loopback_interface",
    "default_backend",
]


def default_backend(device: str) -> str:
    """nccl for CUDA devices, gloo otherwise (CPU; lets the tests run on a laptop)."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


@dataclass
class DistContext:
    """One rank of an initialised process group (or a single process when world_size is 1).

    `device` is this rank's device ("cpu" or "cuda:<local_rank>"); communication tensors are moved
    there (nccl needs CUDA tensors, gloo CPU ones). `sync_bn` converts BatchNorm layers to
    SyncBatchNorm in `wrap_model` (CUDA only: torch's SyncBatchNorm has no CPU kernel).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    sync_bn: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main rank writes results (metrics, predictions, history, checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def train_sampler(self, dataset, seed: int):
        """This rank's shard of `dataset`, reshuffled every epoch from `seed` (None if one process).

        DistributedSampler pads the permutation with its first (-N) mod world_size indices so
        every rank gets the same number of batches (DDP needs equal step counts); the shards
        are otherwise disjoint and cover the dataset.
        """
        if not self.distributed:
            return None
        from torch.utils.data import DistributedSampler

        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                  shuffle=True, seed=int(seed), drop_last=False)

    def set_epoch(self, sampler, epoch: int) -> None:
        """Re-seed the sampler's permutation for `epoch` (seed + epoch, same on every rank)."""
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(int(epoch))

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """DDP around `model` (gradients averaged over ranks); optional SyncBatchNorm first."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        on_cuda = str(self.device).startswith("cuda")
        if self.sync_bn and on_cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if on_cuda:
            index = torch.device(self.device).index
            return DistributedDataParallel(model, device_ids=[index if index is not None else self.local_rank])
        return DistributedDataParallel(model)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (dim 0) in rank order; shards may differ in length.

        all_gather needs equal shapes, so each rank first shares its row count, pads its rows
        to the longest shard, and the padding is cut off again after the exchange.
        """
        if not self.distributed:
            return tensor
        source_device = tensor.device
        comm = torch.device(self.device)
        rows = tensor.detach().to(comm).contiguous()
        is_bool = rows.dtype == torch.bool
        if is_bool:
            rows = rows.to(torch.uint8)
        count = torch.tensor([rows.shape[0]], dtype=torch.long, device=comm)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        torch_dist.all_gather(counts, count)
        lengths = [int(c.item()) for c in counts]
        longest = max(lengths)
        if rows.shape[0] < longest:
            pad = rows.new_zeros((longest - rows.shape[0], *rows.shape[1:]))
            rows = torch.cat([rows, pad], dim=0)
        parts = [torch.empty_like(rows) for _ in range(self.world_size)]
        torch_dist.all_gather(parts, rows)
        out = torch.cat([part[:n] for part, n in zip(parts, lengths)], dim=0)
        if is_bool:
            out = out.bool()
        return out.to(source_device)

    def barrier(self) -> None:
        if self.distributed:
            torch_dist.barrier()


# ---------------------------------------------------------------- process groups


def _init_group(rank: int, world_size: int, device: str, master_addr: str, master_port: int) -> None:
    os.environ["MASTER_ADDR"] = master_addr
    os.environ["MASTER_PORT"] = str(master_port)
    torch_dist.init_process_group(default_backend(device), rank=rank, world_size=world_size)


def loopback_interface() -> str | None:
    """Name of this machine's loopback network interface ("lo" on Linux, "lo0" on macOS), if any.

    Linux: the interface whose /sys/class/net/<name>/flags has IFF_LOOPBACK; elsewhere the first
    interface named lo*.
    """
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in names:
        try:
            flags = int(Path("/sys/class/net", name, "flags").read_text(), 16)
        except (OSError, ValueError):
            continue
        if flags & 0x8:  # IFF_LOOPBACK
            return name
    return next((name for name in names if name.startswith("lo")), None)


def _init_local_group(rank: int, world_size: int, device: str, store_file: str) -> None:
    """Join a group whose ranks all run on this machine (spawned by `launch`).

    Rendezvous through a file (no TCP port to pick, so none can be taken by another program in the
    meantime), and gloo talks over the loopback interface: by default gloo uses the address the
    host name resolves to, which on machines with a firewalled or half-configured network interface
    makes the ranks' connections fail at random (seen as a SIGABRT in gloo's I/O thread).
    """
    if default_backend(device) == "gloo":
        interface = loopback_interface()
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface  # this spawned process only
    torch_dist.init_process_group(default_backend(device), init_method=Path(store_file).as_uri(),
                                  rank=rank, world_size=world_size)


def _rank_device(device: str, local_rank: int) -> str:
    """Rank r of a CUDA run uses cuda:r (local rank); CPU ranks all use "cpu"."""
    if str(device).startswith("cuda"):
        return f"cuda:{local_rank}"
    return "cpu"


def _spawned_worker(rank: int, world_size: int, device: str, store_file: str, sync_bn: bool,
                    fn: Callable, args: tuple, kwargs: dict, queue) -> None:
    rank_device = _rank_device(device, rank)
    if rank_device.startswith("cuda"):
        torch.cuda.set_device(rank_device)
    _init_local_group(rank, world_size, device, store_file)
    try:
        ctx = DistContext(rank=rank, world_size=world_size, local_rank=rank, device=rank_device,
                          sync_bn=sync_bn)
        result = fn(*args, dist=ctx, device=rank_device, **kwargs)
        if rank == 0:
            queue.put(("ok", result))
    except BaseException:
        if rank == 0:
            queue.put(("error", traceback.format_exc()))
        raise
    finally:
        torch_dist.destroy_process_group()
    _exit_without_finalizing()


def _exit_without_finalizing() -> None:
    """End a rank that finished its work with exit status 0, skipping interpreter shutdown.

    A DistributedDataParallel model keeps its process group alive after the model and the group
    are gone (torch's reducer holds it), so gloo's worker threads outlive `destroy_process_group`.
    Such a thread may still be releasing the tensors of the last collective when the interpreter
    finalises; it then needs the GIL, which finalisation refuses, and the rank dies by SIGABRT
    ("terminate called without an active exception") although its work is done and saved. Every
    result has been written (files closed, rank 0's value sent through the pipe) by now, so the
    rank flushes what Python buffers and leaves with os._exit.
    """
    import logging
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(0)


def launch(fn: Callable, world_size: int, *args, device: str = "cpu", sync_bn: bool = False,
           **kwargs) -> Any:
    """Run `fn(*args, dist=DistContext, device=<rank device>, **kwargs)` in `world_size` processes.

    Processes are spawned (fresh interpreters: `fn` and its arguments must be picklable, i.e.
    module-level); returns rank 0's return value. A failing rank raises in the caller.
    """
    import torch.multiprocessing as mp

    world_size = int(world_size)
    if str(device).startswith("cuda") and torch.cuda.device_count() < world_size:
        from calbench.errors import ConfigError

        raise ConfigError(f"--gpus-per-run {world_size}: only {torch.cuda.device_count()} CUDA devices visible")
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="calbench-dist-") as store_dir:
        store_file = str(Path(store_dir, "rendezvous"))
        mp.start_processes(_spawned_worker, args=(world_size, device, store_file, sync_bn, fn, args,
                                                  kwargs, queue),
                           nprocs=world_size, join=True, start_method="spawn")
    if queue.empty():
        raise RuntimeError("distributed launch: rank 0 returned nothing")
    kind, value = queue.get()
    if kind == "error":
        raise RuntimeError(f"distributed launch: rank 0 failed:\n{value}")
    return value


def env_world_size() -> int:
    """World size of a process group started outside calbench (torchrun or a multi-task submitit job)."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    try:
        import submitit

        env = submitit.JobEnvironment()
        return int(env.num_tasks)
    except Exception:  # not inside a submitit job
        return 1


def context_from_env(device: str = "cpu", sync_bn: bool = False) -> DistContext:
    """Join the process group described by the environment (torchrun first, then submitit/SLURM).

    Under submitit, `submitit.helpers.TorchDistributedEnvironment` gives the master address (first
    host of the job), a port derived from the job id, and each task's global and local rank.
    """
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = int(os.environ.get("MASTER_PORT", "29500"))
    else:
        import submitit

        env = submitit.helpers.TorchDistributedEnvironment()
        rank, world, local_rank = env.rank, env.world_size, env.local_rank
        addr, port = env.master_addr, env.master_port
    rank_device = _rank_device(device, local_rank)
    if world > 1 and not torch_dist.is_initialized():
        if rank_device.startswith("cuda"):
            torch.cuda.set_device(rank_device)
        _init_group(rank, world, device, addr, port)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=rank_device,
                       sync_bn=sync_bn)
