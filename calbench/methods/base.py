"""The contract every calibration method meets; the training engine only talks to this.

A method is a `torch.nn.Module` (so its buffers, e.g. CALS multipliers, move with `.to()`
and are saved by `state_dict()`).

Generic hooks, so that the engine drives every method without special cases:

- `loss(logits, targets, features=None)`: scalar training loss averaged over non-ignored
  rows. `features` are the backbone's penultimate features for the same rows; the engine
  passes them only when `needs_features` is True.
- `end_epoch(val_logits, val_targets, epoch)`: per-epoch update from VALIDATION logits
  (epoch counted from 0). Adaptive methods (cals-alm, cals-hr) override it.
- `extra_parameters()`: parameters that the method trains itself (e.g. gamma-net); the
  engine never puts them in the backbone optimizer.
- `needs_meta_split`: the engine carves a meta-validation split out of train (seeded) and
  calls `meta_step(...)` once per training batch, before the real backbone step, with the
  backbone's classifier head, the batch's detached features and targets, a
  meta-validation batch's detached features and targets, and the current learning rate.
- `stats()`: a flat dict of floats for the history log.
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
        if features is not None:
            features = features.movedim(1, -1).reshape(-1, features.shape[1])
    keep = targets != ignore_index
    if not bool(keep.all()):
        logits, targets = logits[keep], targets[keep]
        if features is not None:
            features = features[keep]
    return (logits, targets) if features is None else (logits, targets, features)


class Method(nn.Module):
    """Base class: subclasses implement `loss` (use `flatten_rows` for 4-D inputs and ignore_index)."""

    name: str = ""
    needs_features: bool = False
    needs_meta_split: bool = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             features: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

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
