"""Small tensor helpers shared by the loss families."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) are computed on in float32; float32/float64 are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def target_log_prob(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_{i, y_i} for every row."""
    return log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -log p_y over the rows (float32 at least, also under bf16 autocast)."""
    return F.cross_entropy(upcast(logits), targets.long())


def logit_distances(logits: torch.Tensor) -> torch.Tensor:
    """d_ik = max_j l_ij - l_ik; the max is NOT detached (METHODS.md notation)."""
    logits = upcast(logits)
    return logits.max(dim=1, keepdim=True).values - logits


def empty_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph when every row of the batch is ignored."""
    return upcast(logits).sum() * 0.0
