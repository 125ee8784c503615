"""Dual focal loss (Tao, Dong and Xu, ICML 2023).

    L = mean_i -(1 - p_iy + p_ij)^gamma log p_iy

with p_ij the largest probability of row i strictly below the target's p_iy (0 if there is
none, i.e. when p_iy is the row's smallest probability). Where the target is the prediction,
p_ij is the runner-up, so the weight also shrinks the gap to the second class, which plain focal
loss (p_j = 0) leaves free.

Facts from the authors' code (Linwei94/ICML2023-DualFocalLoss, Losses/dual_focal_loss.py),
which calbench follows: the "strictly below" mask is a `<` comparison against p_y (so classes
tied with p_y are excluded); gradients flow through both p_y and p_j (neither is detached).
Where calbench differs:
- the authors' loss defaults to a SUM over the batch (size_average=False); calbench AVERAGES over
  the rows like every other method here, so the authors' learning rates correspond to calbench
  learning rates scaled by the batch size.
- the base (1 - p_y + p_j) is floored at 1e-6 (as calbench's focal loss), so that the gradient
  stays finite for gamma < 1 when p_y rounds to 1; 1 - p_y is computed as -expm1(log p_y).
Default gamma = 5: the released experiment folders of the authors use gamma 5 (WRN-26-10),
6 (ResNet-50) and 7 (ResNet-110) on CIFAR-10; the paper tunes gamma per setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, target_log_prob
from calbench.methods.registry import METHODS


def largest_probability_below_target(probs: torch.Tensor, p_y: torch.Tensor) -> torch.Tensor:
    """p_j = max {p_k : p_k < p_y} per row, 0 if no class is below the target."""
    below = probs < p_y.unsqueeze(1)
    return torch.where(below, probs, torch.zeros_like(probs)).amax(dim=1)


def dual_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean_i -(1 - p_iy + p_ij)^gamma log p_iy (module docstring)."""
    if gamma == 0:
        return cross_entropy(logits, targets)            # the limit, exactly
    log_probs = F.log_softmax(logits, dim=1)
    log_py = target_log_prob(log_probs, targets)
    p_j = largest_probability_below_target(log_probs.exp(), log_py.exp())
    weight = (-torch.expm1(log_py) + p_j).clamp_min(1e-6) ** gamma
    return -(weight * log_py).mean()


@METHODS.register("dual-focal", description="Dual focal loss: (1 - p_y + p_j)^gamma weights, p_j the largest probability below p_y.",
                  paper="Tao et al., ICML 2023")
class DualFocalLoss(Method):
    """mean_i -(1 - p_iy + p_ij)^gamma log p_iy, gamma = 5 (module docstring)."""

    def __init__(self, num_classes: int, *, gamma: float = 5.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        return dual_focal_loss(logits, targets, self.gamma)
