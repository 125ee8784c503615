"""Batches of one split, in a given order, on the right device.

In-memory datasets (a `TensorDataset`, or a `Subset` of one) are indexed directly, without a
DataLoader: for small tensors the loader's per-sample collation costs more than the model.
On-disk datasets go through a DataLoader whose workers are forked (see `loader_context`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from calbench.data.base import tensors_of
from calbench.specs import TrainConfig


def loader_context(num_workers: int) -> str | None:
    """Fork DataLoader workers where possible, explicitly: inside a spawned scheduler worker the
    default would be spawn, and every epoch's loader would re-import torch and re-pickle the
    dataset in each of its workers (seconds per loader). The workers never touch CUDA."""
    import multiprocessing

    return "fork" if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods() else None


class Split:
    """A dataset plus a fast path for tensors; yields (x, y) batches in a given index order."""

    def __init__(self, dataset: Dataset, num_workers: int, pin: bool):
        self.dataset = dataset
        self.tensors = tensors_of(dataset)
        self.num_workers = num_workers
        self.pin = pin

    def __len__(self) -> int:
        return len(self.tensors[0]) if self.tensors is not None else len(self.dataset)

    def batches(self, order: torch.Tensor | list[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(order, dtype=torch.long)
        if self.tensors is not None:
            x, y = self.tensors[0], self.tensors[1]
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                yield x[idx], y[idx]
            return
        loader = DataLoader(Subset(self.dataset, order.tolist()), batch_size=batch_size, shuffle=False,
                            num_workers=self.num_workers, pin_memory=self.pin,
                            persistent_workers=False, multiprocessing_context=loader_context(self.num_workers))
        yield from loader


def make_splits(bundle, cfg: TrainConfig, dev: torch.device) -> tuple:
    """(train, val, test) of `bundle`: resident on the device when `cfg.data_on_device` says so
    (calbench.data.device_resident: decoded once, cropped and flipped there, bit-equal batches),
    else `Split`s; a split the device cannot reproduce keeps its DataLoader either way."""
    from calbench.data import device_resident as resident

    datasets = (bundle.train, bundle.val, bundle.test)
    pin = dev.type == "cuda"
    nbytes = resident.estimated_bytes(datasets, bundle.input_shape)
    if not resident.wants_resident(cfg.data_on_device, dev, nbytes):
        return tuple(Split(d, cfg.num_workers, pin) for d in datasets)
    channels_last = dev.type == "cuda" and cfg.channels_last
    made = [resident.resident_split(d, dev, cfg.num_workers, channels_last, decode_workers=cfg.num_workers)
            for d in datasets]
    return tuple(r if r is not None else Split(d, cfg.num_workers, pin) for r, d in zip(made, datasets))


def _label_array(ds: Dataset) -> np.ndarray | None:
    """The labels of a dataset without reading its inputs: a tensor dataset's second tensor, an
    image list's `labels` / torchvision's `targets` array, through any `Subset`; None if unknown."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[1].numpy()
    if isinstance(ds, Subset):
        inner = _label_array(ds.dataset)
        return None if inner is None else inner[np.asarray(ds.indices, dtype=np.int64)]
    for attr in ("labels", "targets"):
        values = getattr(ds, attr, None)
        if values is not None and len(values) == len(ds):
            return np.asarray(values)
    return None


def class_counts(split: Split, positions: torch.Tensor, num_classes: int, ignore_index: int,
                 scan: bool) -> torch.Tensor | None:
    """Per-class counts (K,) int64 of the rows at `positions` of `split` (pixels for segmentation,
    ignored ones left out). Exact. Reads only the labels when the dataset exposes them; otherwise
    iterates the split once (inputs read and dropped) if `scan`, else returns None."""
    labels = _label_array(split.dataset)
    if labels is not None:
        ys = [torch.as_tensor(labels[positions.numpy()])]
    elif scan:
        ys = [y for _, y in split.batches(positions, 256)]
    else:
        return None
    flat = torch.cat([y.reshape(-1).long() for y in ys]) if ys else torch.zeros(0, dtype=torch.long)
    flat = flat[flat != ignore_index]
    return torch.bincount(flat, minlength=num_classes)[:num_classes].to(torch.int64)


def cycle(positions: torch.Tensor, gen: torch.Generator, split: Split, batch_size: int):
    """Endless batches of `split` at `positions` (a fresh seeded permutation each pass)."""
    while True:
        perm = positions[torch.randperm(len(positions), generator=gen)]
        yield from split.batches(perm, batch_size)


def shard(n: int, dist) -> torch.Tensor:
    """Contiguous evaluation shard of this rank (gathered back in rank order = original order)."""
    if dist is None or dist.world_size <= 1:
        return torch.arange(n)
    bounds = [n * r // dist.world_size for r in range(dist.world_size + 1)]
    return torch.arange(bounds[dist.rank], bounds[dist.rank + 1])


def autocast(device: torch.device, cfg: TrainConfig):
    """bfloat16 autocast on CUDA when `amp` is on; an empty context elsewhere (nothing ever enables
    autocast around it, so a disabled torch.autocast would change nothing, at a few microseconds
    per use, two or three times a step)."""
    if device.type == "cuda" and cfg.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    """An input batch on `device` (channels_last for 4-D CUDA inputs when asked)."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
