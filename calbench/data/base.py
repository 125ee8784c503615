"""What every dataset shares: the DatasetBundle it returns (three disjoint splits and what the engine
needs to build a model), and the DATASETS registry each dataset module adds itself to with `@dataset`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from calbench.registry import Registry

Task = Literal["classification", "segmentation", "text"]


@dataclass
class DatasetBundle:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    task: Task
    input_shape: tuple[int, ...]          # one sample: (C, H, W) for images, (T,) for text
    split_indices: dict[str, np.ndarray]  # saved beside each run (splits.npz)
    ignore_index: int = -100              # 255 for VOC
    backbone_options: dict[str, Any] = field(default_factory=dict)  # e.g. in_chans, embeddings


@dataclass(frozen=True)
class DatasetFamily:
    """How to build one dataset: build(root, seed, **options); check(root, **options) is cheap."""

    build: Callable[..., DatasetBundle]
    check: Callable[..., None] | None = None
    needs_root: bool = True

    @property
    def options(self) -> dict[str, Any]:
        params = list(inspect.signature(self.build).parameters.values())
        return {p.name: p.default for p in params if p.name not in ("root", "seed")}


DATASETS: Registry[DatasetFamily] = Registry("dataset")


def dataset(name: str, *, description: str, task: Task, num_classes: int, layout: str,
            check: Callable[..., None] | None = None, needs_root: bool = True, shot_thresholds=None):
    """Register build(root, seed, **options) -> DatasetBundle as dataset `name`. Its keyword options
    (with their defaults) are the dataset's options; task, num_classes and layout feed
    `calbench list datasets`; check(root, **options) validates a root cheaply before anything trains.
    shot_thresholds: how the long-tail metrics split its classes by train count (None: OLTR's
    >100 / 20-100 / <20; "terciles"; or (few_below, many_above)), docs/metrics.md."""

    def add(build: Callable[..., DatasetBundle]) -> Callable[..., DatasetBundle]:
        DATASETS.register(name, DatasetFamily(build, check, needs_root), description=description,
                          task=task, num_classes=num_classes, layout=layout, shot_thresholds=shot_thresholds)
        return build

    return add


def tensors_of(ds: Dataset) -> tuple[torch.Tensor, ...] | None:
    """The underlying tensors of an in-memory dataset (a TensorDataset, or Subsets of one), so that
    it can be batched by indexing instead of through a DataLoader; None for any other dataset."""
    if isinstance(ds, TensorDataset):
        return ds.tensors
    if isinstance(ds, Subset):
        inner = tensors_of(ds.dataset)
        if inner is not None:
            idx = torch.as_tensor(np.asarray(ds.indices), dtype=torch.long)
            return tuple(t[idx] for t in inner)
    return None
