"""Build everything one run trains with: data splits, backbone, method, optimizer and scheduler.

The order of construction is part of the run's determinism (the backbone's initial weights come
from the global torch RNG seeded with the run's seed before anything else draws from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from calbench.engine.batches import Split, class_counts, make_splits
from calbench.engine.optim_step import StepFunctions
from calbench.specs import RunSpec, TrainConfig

META_SALT = 7919  # the meta-validation carve-out's seed offset (fixed: part of every such run's results)


@dataclass
class RunParts:
    """What the steps of one run share (built once by `build_run`)."""

    spec: RunSpec
    cfg: TrainConfig
    dev: torch.device
    dist: Any
    bundle: Any
    model: nn.Module
    ddp_model: nn.Module
    method: Any
    train_set: Split
    val_set: Split
    test_set: Split
    train_idx: torch.Tensor
    meta_idx: torch.Tensor
    splits: dict[str, np.ndarray]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    val_confusion: torch.Tensor
    train_class_counts: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stepper: Any = None     # calbench.engine.optim_step.StepFunctions of `optimizer`


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The backbone's optimizer (a method's own parameters are never in it)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    return None


def configure_threads(dev: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op threads on the CPU deliberately and return them: `threads` when the
    caller says, else the CALBENCH_THREADS environment variable, else one. One thread per worker
    (and per data-parallel CPU rank): the small models calbench trains on the CPU gain little from
    more, and on a loaded machine two threads per process ran a digits run 5-25x slower than one
    (they wait for each other at every parallel region). CUDA runs are left as they are."""
    if dev.type != "cpu":
        return torch.get_num_threads()
    told = int(threads or 0) or int(os.environ.get("CALBENCH_THREADS", "0") or 0)
    wanted = told if told > 0 else 1
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def _model_and_method(spec: RunSpec, bundle, dev: torch.device, cfg: TrainConfig):
    import calbench.methods as methods
    from calbench.models import create_backbone

    backbone_options = {**bundle.backbone_options, **spec.backbone_options}
    model = create_backbone(spec.backbone, bundle.num_classes, bundle.task, **backbone_options).to(dev)
    if dev.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    hparams = dict(spec.hparams)
    if bundle.ignore_index != -100 and hparams.get("ignore_index", -100) == -100:
        hparams["ignore_index"] = bundle.ignore_index
    method = methods.create_method(spec.method, bundle.num_classes, **hparams).to(dev)
    return model, method


def _meta_carve(spec: RunSpec, cfg: TrainConfig, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(meta, train) positions: a seeded meta_fraction of train for methods with a meta step."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(spec.seed + META_SALT))
    n_meta = max(1, int(round(cfg.meta_fraction * n_train)))
    return perm[:n_meta].sort().values, perm[n_meta:].sort().values


def build_run(spec: RunSpec, dev: torch.device, dist) -> RunParts:
    """Dataset, splits, backbone, method, optimizer, scheduler and sampler of `spec` (not resumed)."""
    from calbench.data import create_dataset

    cfg = spec.train_config
    bundle = create_dataset(spec.dataset, root=spec.root, seed=spec.seed, **spec.dataset_options)
    model, method = _model_and_method(spec, bundle, dev, cfg)
    train_set, val_set, test_set = make_splits(bundle, cfg, dev)
    train_idx, meta_idx = torch.arange(len(train_set)), torch.zeros(0, dtype=torch.long)
    splits = {k: np.asarray(v) for k, v in bundle.split_indices.items()}
    if method.needs_meta_split:
        meta_idx, train_idx = _meta_carve(spec, cfg, len(train_set))
        splits["meta_positions_in_train"] = meta_idx.numpy()
    needs_counts = getattr(method, "needs_class_counts", False)
    counts = class_counts(train_set, train_idx, bundle.num_classes, bundle.ignore_index, scan=needs_counts)
    if needs_counts:
        method.set_class_counts(counts)
    optimizer = make_optimizer(model.parameters(), cfg)
    n_confusion = bundle.num_classes ** 2 if bundle.task == "segmentation" else 0
    return RunParts(spec=spec, cfg=cfg, dev=dev, dist=dist, bundle=bundle, model=model,
                    ddp_model=dist.wrap_model(model) if dist is not None else model, method=method,
                    train_set=train_set, val_set=val_set, test_set=test_set, train_idx=train_idx,
                    meta_idx=meta_idx, splits=splits, optimizer=optimizer,
                    scheduler=make_scheduler(optimizer, cfg),
                    sampler=dist.train_sampler(train_idx.tolist(), spec.seed) if dist is not None else None,
                    val_confusion=torch.zeros(n_confusion, dtype=torch.int64), train_class_counts=counts,
                    stepper=StepFunctions(optimizer))
