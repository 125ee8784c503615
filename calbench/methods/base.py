"""The contract every calibration method meets; the training engine only talks to this.

A method is a `torch.nn.Module` (its buffers, e.g. the CALS multipliers, move with `.to()` and are
saved by `state_dict()`; everything needed to resume exactly is in `state_dict()` as tensors and
plain containers, since checkpoints load with `torch.load(weights_only=True)`).

A method implements `loss_rows` only; the base class's `loss` does, once for every method, what
each used to repeat:

- `loss(logits, targets, features=None, ctx=None)`: flattens (N, K, H, W) logits (and features)
  to pixel rows, drops rows whose target is `ignore_index`, upcasts half-precision logits to
  float32, returns a zero that keeps the graph when no row is left, else `loss_rows(...)`.
- `loss_rows(logits (N, K), targets (N,), features, ctx)`: the scalar mean over N >= 1 rows.
  `features` are the backbone's penultimate features for the same rows; the engine passes them
  only when `needs_features` is True.
- `transform_batch(x, y, generator) -> (x, y, ctx)`: batch methods (the mixup family) change the
  batch here, with the engine's seeded generator; `ctx` reaches `loss(..., ctx=ctx)` for the same
  batch. The default is the identity with `ctx = None`.
- `set_class_counts(counts)`: the train split's (K,) class counts, given once by the engine before
  training when `needs_class_counts` is True (long-tail losses); kept in the `class_counts` buffer.
- `end_epoch(val_logits, val_targets, epoch)`: per-epoch update from VALIDATION logits (epoch
  counted from 0). Adaptive methods (cals-alm, cals-hr) override it.
- `extra_parameters()`: parameters that the method trains itself (e.g. gamma-net); the engine
  never puts them in the backbone optimizer.
- `needs_meta_split`: the engine carves a meta-validation split out of train (seeded) and calls
  `meta_step(...)` once per training batch, before the real backbone step, with the backbone's
  classifier head, the batch's detached features and targets, a meta-validation batch's detached
  features and targets, and the current learning rate.
- `stats()`: a flat dict of floats for the history log.
- `version`: part of the run identity; bump it when a change alters what the method computes.

Formulas, defaults and every choice where calbench follows a paper over its authors' code:
docs/methods.md.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100


def flatten_rows(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                 features: torch.Tensor | None = None):
    """(N, K, H, W) -> (N*H*W, K) pixel rows; drop rows whose target is ignore_index."""
    if logits.dim() > 2:
        k = logits.shape[1]
        logits = logits.movedim(1, -1).reshape(-1, k)
        targets = targets.reshape(-1)
        if features is not None and features.dim() > 2:
            features = features.movedim(1, -1).reshape(-1, features.shape[1])
    keep = targets != ignore_index
    if not bool(keep.all()):
        logits, targets = logits[keep], targets[keep]
        if features is not None:
            features = features[keep]
    return (logits, targets) if features is None else (logits, targets, features)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) are computed on in float32; float32/float64 are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def empty_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph when every row of the batch is ignored."""
    return upcast(logits).sum() * 0.0


class Method(nn.Module):
    """Base class: subclasses implement `loss_rows` (see the module docstring)."""

    name: str = ""
    version: int = 1
    needs_features: bool = False
    needs_meta_split: bool = False
    needs_class_counts: bool = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        if self.needs_class_counts:
            self.register_buffer("class_counts", torch.zeros(self.num_classes, dtype=torch.float64))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None,
             ctx=None) -> torch.Tensor:
        """Scalar training loss averaged over the non-ignored rows (a graph-keeping 0 if none)."""
        if self.needs_features and features is None:
            raise ValueError(f"{self.name or type(self).__name__} needs the backbone's penultimate features")
        if features is None or not self.needs_features:
            logits, targets = flatten_rows(logits, targets, self.ignore_index)
            features = None
        else:
            logits, targets, features = flatten_rows(logits, targets, self.ignore_index, features)
        if targets.numel() == 0:
            return empty_loss(logits)
        return self.loss_rows(upcast(logits), targets, features, ctx)

    def loss_rows(self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None,
                  ctx=None) -> torch.Tensor:
        """Mean loss over N >= 1 rows: (N, K) float32/float64 logits, (N,) valid targets."""
        raise NotImplementedError

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        """(x, y, ctx) for one training batch; batch methods mix inputs here. Default: unchanged."""
        return x, y, None

    def set_class_counts(self, counts: torch.Tensor) -> None:
        """The train split's per-class counts, (K,); given once when `needs_class_counts` is True."""
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        if counts.numel() != self.num_classes:
            raise ValueError(f"{self.name}: expected {self.num_classes} class counts, got {counts.numel()}")
        if "class_counts" not in self._buffers:
            self.register_buffer("class_counts", torch.zeros(self.num_classes, dtype=torch.float64))
        self.class_counts.copy_(counts.to(self.class_counts.device))

    def end_epoch(self, val_logits: torch.Tensor, val_targets: torch.Tensor, epoch: int) -> None:
        """Per-epoch update from validation logits; a no-op for non-adaptive methods."""

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def meta_step(self, *, head: nn.Module, features: torch.Tensor, targets: torch.Tensor,
                  meta_features: torch.Tensor, meta_targets: torch.Tensor, lr: float) -> dict:
        """One meta-learning step before the real step; a no-op unless needs_meta_split."""
        return {}

    def stats(self) -> dict[str, float]:
        return {}
