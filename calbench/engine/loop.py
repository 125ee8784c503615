"""One training epoch and its end: the steps every method shares.

Deterministic on the CPU: the data order of epoch e and the batch methods' mixing draws come from
generators seeded by (seed, e), and the global RNGs (dropout, python `random` augmentation) are
re-seeded at every epoch, so a run resumed at epoch e draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from calbench.engine import evaluate
from calbench.engine.batches import autocast, cycle, to_device
from calbench.engine.build import RunParts

NONFINITE_CHECK_EVERY = 50  # accelerators: steps between host-synchronising loss checks


class NonFiniteLoss(RuntimeError):
    def __init__(self, epoch: int, value: float):
        super().__init__(f"loss became {value} at epoch {epoch}")
        self.epoch = epoch


def check_period(device: torch.device) -> int:
    """Steps between loss checks: every step on the CPU (free), else every NONFINITE_CHECK_EVERY."""
    return 1 if device.type == "cpu" else NONFINITE_CHECK_EVERY


def check_finite(loss: torch.Tensor, epoch: int) -> None:
    """Raise NonFiniteLoss when `loss` is NaN or inf (one host synchronisation)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(epoch, value)


def seed_everything(seed: int, device: torch.device | None = None) -> None:
    """Seed python's, numpy's and torch's global generators with `seed`.

    A CPU run in a process where CUDA was never initialised seeds torch's CPU generator alone:
    `torch.manual_seed` would also queue a lazy CUDA seeding, recording a stack trace each time
    (about a millisecond, every epoch), for a CUDA generator the run never uses. The CPU stream
    is the same either way (`torch.manual_seed` ends with the same `default_generator` call)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if device is not None and device.type == "cpu" and not torch.cuda.is_initialized():
        torch.default_generator.manual_seed(int(seed))
    else:
        torch.manual_seed(seed)


def epoch_generators(seed: int, epoch: int) -> tuple[torch.Generator, torch.Generator]:
    """(data order, batch transform) generators of one epoch, both seeded by (seed, epoch): the
    order stream is the one calbench always used; batch methods draw from a stream of their own,
    so adding one to a recipe changes neither the order nor the meta batches of the others."""
    order = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    mixing = torch.Generator().manual_seed(seed * 1_000_033 + epoch + 17)
    return order, mixing


def epoch_order(parts: RunParts, epoch: int, gen: torch.Generator) -> torch.Tensor:
    """Positions in the train split of this epoch's batches (this rank's shard under DDP)."""
    train_idx, dist = parts.train_idx, parts.dist
    if parts.sampler is not None:
        dist.set_epoch(parts.sampler, epoch)
        order = train_idx[torch.as_tensor(list(iter(parts.sampler)), dtype=torch.long)]
    else:
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
    if len(order) > 1 and len(order) % parts.cfg.batch_size == 1:
        order = order[:-1]      # a last batch of one sample cannot train BatchNorm: skip it
    return order


def _forward(parts: RunParts, x: torch.Tensor):
    """(logits, features or None) of a training batch under autocast."""
    with autocast(parts.dev, parts.cfg):
        if parts.method.needs_features:
            return parts.ddp_model(x, return_features=True)
        return parts.ddp_model(x), None


def _meta_step(parts: RunParts, meta_batches, features: torch.Tensor, y: torch.Tensor, lr: float) -> None:
    """The method's meta step on one meta-validation batch (features in eval mode, no graph)."""
    mx, my = next(meta_batches)
    mx, my = to_device(mx, parts.dev, parts.cfg), my.to(parts.dev, non_blocking=True)
    model = parts.model
    with torch.no_grad(), autocast(parts.dev, parts.cfg):
        model.eval()
        _, meta_features = model(mx, return_features=True)
        model.train()
    parts.method.meta_step(head=model.head, features=features.detach().float(), targets=y,
                           meta_features=meta_features.detach().float(), meta_targets=my, lr=lr)


def _step(parts: RunParts, loss: torch.Tensor) -> None:
    """Gradients cleared, backward, clipping, the optimizer's step (calbench.engine.optim_step:
    the same arithmetic as zero_grad(set_to_none=True) and step(), without their wrappers)."""
    stepper = parts.stepper
    if stepper is not None:
        stepper.zero_grad()
    else:
        parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if parts.cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(parts.model.parameters(), parts.cfg.grad_clip)
    if stepper is not None:
        stepper.step()
    else:
        parts.optimizer.step()


def train_one_epoch(parts: RunParts, epoch: int) -> tuple[float, float]:
    """Train one epoch; returns (its learning rate, mean training loss over its samples)."""
    seed = parts.spec.seed
    seed_everything(seed * 100_003 + epoch, parts.dev)   # torch, numpy and random: resumable
    gen, mixing = epoch_generators(seed, epoch)
    order = epoch_order(parts, epoch, gen)
    method, dev, cfg = parts.method, parts.dev, parts.cfg
    meta_batches = cycle(parts.meta_idx, gen, parts.train_set, cfg.batch_size) if method.needs_meta_split else None
    transform = getattr(method, "transform_batch", None)
    lr = parts.optimizer.param_groups[0]["lr"]
    check_every = check_period(dev)
    parts.ddp_model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    seen = 0
    for steps, (x, y) in enumerate(parts.train_set.batches(order, cfg.batch_size), start=1):
        x, y = to_device(x, dev, cfg), y.to(dev, non_blocking=True)
        x, y, ctx = transform(x, y, mixing) if transform is not None else (x, y, None)
        logits, features = _forward(parts, x)
        if meta_batches is not None:
            _meta_step(parts, meta_batches, features, y, lr)
        with autocast(dev, cfg):
            loss = method.loss(logits, y, features=features, ctx=ctx) if ctx is not None \
                else method.loss(logits, y, features=features)
        if steps % check_every == 0:      # CPU: every step; CUDA: no host sync per step
            check_finite(loss, epoch)
        _step(parts, loss)
        loss_sum += loss.detach().double() * len(y)
        seen += len(y)
    check_finite(loss_sum, epoch)        # a non-finite step between checks poisons the sum
    return lr, float(loss_sum) / max(1, seen)


def validate(parts: RunParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation logits and labels (every rank's rows; pixel confusion counts for segmentation)."""
    b = parts.bundle
    return evaluate.predict(parts.ddp_model, parts.val_set, parts.cfg, parts.dev, b.task, b.ignore_index,
                            parts.dist, seed=parts.spec.seed, confusion=parts.val_confusion)


def end_epoch(parts: RunParts, epoch: int, lr: float, train_loss: float,
              started: float) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
    """Scheduler step, validation, the method's end-of-epoch update; (history line, validation)."""
    if parts.scheduler is not None:
        parts.scheduler.step()
    val_logits, val_labels = validate(parts)
    parts.method.end_epoch(val_logits.to(parts.dev), val_labels.to(parts.dev), epoch)
    line = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
            **evaluate.val_summary(val_logits, val_labels), "time_s": time.perf_counter() - started,
            **{k: float(v) for k, v in parts.method.stats().items()}}
    return line, (val_logits, val_labels)
