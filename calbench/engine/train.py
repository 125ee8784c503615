"""Train and evaluate one run: the protocol every method shares.

- Inner steps on the train split (minus a seeded meta-validation share for methods with a meta
  step); after each epoch the VALIDATION logits drive the method's `end_epoch` (CALS multipliers)
  and the history line; post-hoc calibrators are fitted on validation; test is only evaluated.
- Deterministic on the CPU: the data order of epoch e comes from a generator seeded by (seed, e)
  and the global RNGs are re-seeded at every epoch, so a resumed run equals an uninterrupted one.
- bfloat16 autocast and channels_last only on CUDA (flags `amp`, `channels_last`).
- A per-epoch checkpoint (model, optimizer, scheduler, method state, history) lets a killed run
  resume from its last finished epoch.
- With a DistContext (calbench.engine.distributed) each rank trains on its shard; validation and
  test logits are gathered from all ranks, so adaptive methods see every validation row.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from calbench.engine.checkpoint import load_checkpoint, save_checkpoint
from calbench.specs import RunSpec, TrainConfig

PIXELS_PER_IMAGE = 4096  # segmentation: pixel rows kept per image in saved predictions


NONFINITE_CHECK_EVERY = 50  # accelerators: steps between host-synchronising loss checks


class NonFiniteLoss(RuntimeError):
    def __init__(self, epoch: int, value: float):
        super().__init__(f"loss became {value} at epoch {epoch}")
        self.epoch = epoch


def _check_period(device: torch.device) -> int:
    """Steps between loss checks: every step on the CPU (free), else every NONFINITE_CHECK_EVERY."""
    return 1 if device.type == "cpu" else NONFINITE_CHECK_EVERY


def _check_finite(loss: torch.Tensor, epoch: int) -> None:
    """Raise NonFiniteLoss when `loss` is NaN or inf (one host synchronisation)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(epoch, value)


@dataclass
class RunOutput:
    metrics: dict[str, dict[str, float]]
    temperature: float | None
    history: list[dict[str, Any]]
    epochs_done: int
    predictions: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]
    extra: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tensors(ds: Dataset) -> tuple[torch.Tensor, ...] | None:
    """The underlying tensors of an in-memory dataset (iterated without a DataLoader), else None."""
    if isinstance(ds, TensorDataset):
        return ds.tensors
    if isinstance(ds, Subset):
        inner = _tensors(ds.dataset)
        if inner is not None:
            idx = torch.as_tensor(np.asarray(ds.indices), dtype=torch.long)
            return tuple(t[idx] for t in inner)
    return None


def _loader_context(num_workers: int) -> str | None:
    """Fork DataLoader workers where possible, explicitly: inside a spawned scheduler worker the
    default would be spawn, and every epoch's loader would re-import torch and re-pickle the
    dataset in each of its workers (seconds per loader). The workers never touch CUDA."""
    import multiprocessing

    return "fork" if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods() else None


class Split:
    """A dataset plus a fast path for tensors; yields (x, y) batches in a given index order."""

    def __init__(self, dataset: Dataset, num_workers: int, pin: bool):
        self.dataset = dataset
        self.tensors = _tensors(dataset)
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
                            persistent_workers=False, multiprocessing_context=_loader_context(self.num_workers))
        yield from loader


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _shard(n: int, dist) -> torch.Tensor:
    """Contiguous evaluation shard of this rank (gathered back in rank order = original order)."""
    if dist is None or dist.world_size <= 1:
        return torch.arange(n)
    bounds = [n * r // dist.world_size for r in range(dist.world_size + 1)]
    return torch.arange(bounds[dist.rank], bounds[dist.rank + 1])


def _flatten_pixels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) -> at most PIXELS_PER_IMAGE seeded random non-ignored pixel rows per image."""
    k = logits.shape[1]
    out_l, out_y = [], []
    for b in range(logits.shape[0]):
        rows = logits[b].reshape(k, -1).T
        ys = labels[b].reshape(-1)
        keep = torch.nonzero(ys != ignore_index).squeeze(1)
        if keep.numel() > PIXELS_PER_IMAGE:
            keep = keep[torch.randperm(keep.numel(), generator=generator)[:PIXELS_PER_IMAGE]].sort().values
        out_l.append(rows[keep])
        out_y.append(ys[keep])
    return torch.cat(out_l), torch.cat(out_y)


@torch.no_grad()
def predict(model: nn.Module, split: Split, cfg: TrainConfig, device: torch.device, task: str,
            ignore_index: int, dist=None, seed: int = 0,
            confusion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels of a whole split, in split order, gathered over ranks.

    Segmentation: the rows are a seeded subsample of pixels (PIXELS_PER_IMAGE per image); when
    `confusion` (K*K int64, zeros) is given it is filled with the confusion counts of ALL
    non-ignored pixels (label * K + prediction, summed over ranks) for an exact mIoU.
    """
    model.eval()
    order = _shard(len(split), dist)
    gen = torch.Generator().manual_seed(seed)
    all_logits, all_labels = [], []
    counts = None
    for x, y in split.batches(order, cfg.eval_batch_size):
        x, y = _to_device(x, device, cfg), y.to(device, non_blocking=True)
        with _autocast(device, cfg):
            logits = model(x)
        logits = logits.float()
        if task == "segmentation":
            if confusion is not None:
                k = logits.shape[1]
                keep = y != ignore_index
                cells = torch.bincount(y[keep] * k + logits.argmax(1)[keep], minlength=k * k)
                counts = cells if counts is None else counts + cells
            logits, y = _flatten_pixels(logits.cpu(), y.cpu(), ignore_index, gen)
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
    logits = torch.cat(all_logits) if all_logits else torch.zeros(0)
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.long)
    if confusion is not None and task == "segmentation":
        counts = torch.zeros_like(confusion) if counts is None else counts.cpu().to(confusion.dtype)
        if dist is not None and dist.world_size > 1:
            counts = dist.gather_rows(counts.unsqueeze(0)).sum(0)
        confusion.copy_(counts)
    if dist is not None and dist.world_size > 1:
        logits, labels = dist.gather_rows(logits), dist.gather_rows(labels)
    return logits, labels.long()


def _miou(confusion: torch.Tensor) -> float:
    from calbench.metrics.segmentation import miou_from_confusion

    k = int(round(confusion.numel() ** 0.5))
    return float(miou_from_confusion(confusion.double().reshape(k, k).numpy()))


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = device.type == "cuda" and cfg.amp
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _to_device(x: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and cfg.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _val_summary(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from calbench.metrics import compute_metrics

    if logits.shape[0] == 0:
        return {}
    m = compute_metrics(labels.numpy(), logits=logits.numpy(), keys=("acc", "ece", "nll"))
    return {f"val_{k}": float(v) for k, v in m.items()}


def train_run(spec: RunSpec, run_dir: str | Path, device: str = "cpu", dist=None,
              progress: Callable[[int, int], None] | None = None,
              on_epoch: Callable[[list[dict[str, Any]]], None] | None = None) -> RunOutput:
    """Train `spec` and evaluate it; checkpoints to run_dir/checkpoint.pt (main rank only)."""
    from calbench.data import create_dataset
    from calbench.methods import create_method, fit_posthoc
    from calbench.metrics import METRIC_KEYS, compute_metrics
    from calbench.models import create_backbone

    run_dir = Path(run_dir)
    cfg = spec.train_config
    world = dist.world_size if dist is not None else 1
    if world != cfg.world_size:
        raise ValueError(f"run {spec.run_id} is configured for {cfg.world_size} process(es) "
                         f"(train.world_size) but was started with {world}")
    dev = torch.device(device)
    is_main = dist is None or dist.is_main
    seed_everything(spec.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed input sizes: let cuDNN pick its fastest kernels

    bundle = create_dataset(spec.dataset, root=spec.root, seed=spec.seed, **spec.dataset_options)
    backbone_options = {**bundle.backbone_options, **spec.backbone_options}
    model = create_backbone(spec.backbone, bundle.num_classes, bundle.task, **backbone_options).to(dev)
    if dev.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    hparams = dict(spec.hparams)
    if bundle.ignore_index != -100 and hparams.get("ignore_index", -100) == -100:
        hparams["ignore_index"] = bundle.ignore_index
    method = create_method(spec.method, bundle.num_classes, **hparams).to(dev)

    pin = dev.type == "cuda"
    train_set, val_set, test_set = (Split(d, cfg.num_workers, pin) for d in (bundle.train, bundle.val, bundle.test))
    train_idx = torch.arange(len(train_set))
    meta_idx = torch.zeros(0, dtype=torch.long)
    splits = {k: np.asarray(v) for k, v in bundle.split_indices.items()}
    if method.needs_meta_split:
        g = torch.Generator().manual_seed(spec.seed + 7919)
        perm = torch.randperm(len(train_set), generator=g)
        n_meta = max(1, int(round(cfg.meta_fraction * len(train_set))))
        meta_idx, train_idx = perm[:n_meta].sort().values, perm[n_meta:].sort().values
        splits["meta_positions_in_train"] = meta_idx.numpy()

    ddp_model = dist.wrap_model(model) if dist is not None else model
    optimizer = _make_optimizer(model.parameters(), cfg)
    scheduler = _make_scheduler(optimizer, cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path, spec.run_id)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1

    sampler = dist.train_sampler(train_idx.tolist(), spec.seed) if dist is not None else None
    check_every = _check_period(dev)
    val_logits = val_labels = None
    val_confusion = torch.zeros(bundle.num_classes ** 2 if bundle.task == "segmentation" else 0, dtype=torch.int64)
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        seed_everything(spec.seed * 100_003 + epoch)   # torch, numpy and random: resumable
        gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
        if sampler is not None:
            dist.set_epoch(sampler, epoch)
            order = train_idx[torch.as_tensor(list(iter(sampler)), dtype=torch.long)]
        else:
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        if len(order) > 1 and len(order) % cfg.batch_size == 1:
            order = order[:-1]      # a last batch of one sample cannot train BatchNorm: skip it
        meta_batches = _cycle(val_order=meta_idx, gen=gen, split=train_set, batch_size=cfg.batch_size) \
            if method.needs_meta_split else None
        lr = optimizer.param_groups[0]["lr"]
        ddp_model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        seen = 0
        steps = 0
        for x, y in train_set.batches(order, cfg.batch_size):
            x, y = _to_device(x, dev, cfg), y.to(dev, non_blocking=True)
            with _autocast(dev, cfg):
                if method.needs_features:
                    logits, features = ddp_model(x, return_features=True)
                else:
                    logits, features = ddp_model(x), None
            if meta_batches is not None:
                mx, my = next(meta_batches)
                mx, my = _to_device(mx, dev, cfg), my.to(dev, non_blocking=True)
                with torch.no_grad(), _autocast(dev, cfg):
                    _unwrap(ddp_model).eval()
                    _, meta_features = _unwrap(ddp_model)(mx, return_features=True)
                    _unwrap(ddp_model).train()
                method.meta_step(head=_unwrap(model).head, features=features.detach().float(), targets=y,
                                 meta_features=meta_features.detach().float(), meta_targets=my, lr=lr)
            with _autocast(dev, cfg):
                loss = method.loss(logits, y, features=features)
            steps += 1
            if steps % check_every == 0:      # CPU: every step; CUDA: no host sync per step
                _check_finite(loss, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach().double() * len(y)
            seen += len(y)
        _check_finite(loss_sum, epoch)        # a non-finite step between checks poisons the sum
        if scheduler is not None:
            scheduler.step()
        val_logits, val_labels = predict(ddp_model, val_set, cfg, dev, bundle.task, bundle.ignore_index,
                                         dist, seed=spec.seed, confusion=val_confusion)
        method.end_epoch(val_logits.to(dev), val_labels.to(dev), epoch)
        line = {"epoch": epoch, "lr": lr, "train_loss": float(loss_sum) / max(1, seen),
                **_val_summary(val_logits, val_labels), "time_s": time.perf_counter() - started,
                **{k: float(v) for k, v in method.stats().items()}}
        history.append(line)
        if is_main:
            save_checkpoint(ckpt_path, {
                "run_id": spec.run_id, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "method": method.state_dict(), "history": history})
            if on_epoch is not None:
                on_epoch(history)
        if progress is not None:
            progress(epoch + 1, cfg.epochs)

    if val_logits is None:  # resumed after the last epoch's checkpoint: evaluate validation again
        val_logits, val_labels = predict(ddp_model, val_set, cfg, dev, bundle.task, bundle.ignore_index,
                                         dist, seed=spec.seed, confusion=val_confusion)
    test_confusion = torch.zeros_like(val_confusion)
    test_logits, test_labels = predict(ddp_model, test_set, cfg, dev, bundle.task, bundle.ignore_index,
                                       dist, seed=spec.seed + 1, confusion=test_confusion)

    segmentation = bundle.task == "segmentation"
    keys = METRIC_KEYS          # segmentation: calibration metrics on the saved pixel rows ...
    metrics = {"test": compute_metrics(test_labels.numpy(), logits=test_logits.numpy(), keys=keys),
               "val": compute_metrics(val_labels.numpy(), logits=val_logits.numpy(), keys=keys)}
    if segmentation:            # ... and mIoU exact over every non-ignored pixel
        metrics["test"]["miou"], metrics["val"]["miou"] = _miou(test_confusion), _miou(val_confusion)
    temperature = None
    extra: dict[str, Any] = {}
    for name in spec.posthoc:
        calibrator = fit_posthoc(name, val_logits.double(), val_labels)
        calibrated = calibrator.transform(test_logits.double()).float()
        block = compute_metrics(test_labels.numpy(), logits=calibrated.numpy(), keys=keys)
        if hasattr(calibrator, "temperature"):
            temperature = float(calibrator.temperature)
            if segmentation:    # a positive temperature keeps every pixel's argmax: same mIoU
                block["miou"] = metrics["test"]["miou"]
        elif segmentation:      # a calibrator that may move the argmax: mIoU of the saved rows
            block["miou"] = compute_metrics(test_labels.numpy(), logits=calibrated.numpy(), keys=("miou",))["miou"]
        metrics[f"test_{name}"] = block
        extra[f"posthoc_{name}"] = calibrator.state()
    if segmentation:
        extra["pixel_rows_per_image"] = PIXELS_PER_IMAGE
        extra["miou_pixels"] = "all non-ignored pixels (test, val, test_ts); saved pixel rows otherwise"
    return RunOutput(metrics=metrics, temperature=temperature, history=history, epochs_done=cfg.epochs,
                     predictions={"test_logits": test_logits.numpy().astype(np.float32),
                                  "test_labels": test_labels.numpy().astype(np.int64),
                                  "val_logits": val_logits.numpy().astype(np.float32),
                                  "val_labels": val_labels.numpy().astype(np.int64)},
                     splits=splits, extra=extra)


def _cycle(val_order: torch.Tensor, gen: torch.Generator, split: Split, batch_size: int):
    """Endless meta-validation batches (a fresh seeded permutation each pass)."""
    while True:
        perm = val_order[torch.randperm(len(val_order), generator=gen)]
        yield from split.batches(perm, batch_size)
