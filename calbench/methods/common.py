"""Small tensor helpers shared by the loss families."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods.base import empty_loss, upcast

__all__ = ["upcast", "empty_loss", "target_log_prob", "cross_entropy"]


def target_log_prob(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_{i, y_i} for every row."""
    return log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -log p_y over the rows (float32 at least, also under bf16 autocast)."""
    return F.cross_entropy(upcast(logits), targets.long())
