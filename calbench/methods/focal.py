"""Focal loss (Lin et al., ICCV 2017) and its sample-dependent variant FLSD-53 (Mukhoti et al., NeurIPS 2020).

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, target_log_prob, upcast
from calbench.methods.registry import METHODS


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma) -> torch.Tensor:
    """mean_i -(1 - p_iy)^gamma_i log p_iy; p_y is not detached; gamma a float or an (N,) tensor.

    1 - p_y is computed as -expm1(log p_y), which stays accurate when p_y is close to 1.
    """
    if isinstance(gamma, (int, float)) and gamma == 0:
        return cross_entropy(logits, targets)         # the limit, exactly
    log_py = target_log_prob(F.log_softmax(upcast(logits), dim=1), targets)
    # floored at 1e-6 so that d/dx x^gamma (and the second derivative the gamma-net's meta step
    # takes) stay finite for gamma < 1 when p_y rounds to 1; there log p_y ~ -1e-6 and the term
    # is below 1e-12 either way
    one_minus = (-torch.expm1(log_py)).clamp_min(1e-6)
    return (-(one_minus ** gamma) * log_py).mean()


@METHODS.register("fl", description="Focal loss: down-weights confident samples by (1 - p_y)^gamma.",
                  paper="Lin et al., ICCV 2017; Mukhoti et al., NeurIPS 2020")
class FocalLoss(Method):
    """mean_i -(1 - p_iy)^gamma log p_iy, gamma = 3 (CALS App. C)."""

    def __init__(self, num_classes: int, *, gamma: float = 3.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        return focal_loss(logits, targets, self.gamma)


def flsd_gammas(p_y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample gamma of FLSD-53: 5 for p_y < 0.2, 3 for 0.2 <= p_y < 0.5, else `gamma`."""
    g = torch.full_like(p_y, float(gamma))
    g = torch.where(p_y < 0.5, torch.full_like(p_y, 3.0), g)
    return torch.where(p_y < 0.2, torch.full_like(p_y, 5.0), g)


@METHODS.register("flsd", description="Sample-dependent focal loss (FLSD-53): gamma 5 / 3 by p_y.",
                  paper="Mukhoti et al., NeurIPS 2020")
class FocalLossSampleDependent(Method):
    """Focal loss whose gamma is chosen per sample from the DETACHED p_y (FLSD-53).

    gamma_i = 5 if p_y < 0.2, 3 if 0.2 <= p_y < 0.5, else `gamma` (3). The authors' code
    (focal_calibration) uses the same thresholds; the choice does not propagate gradients.
    """

    def __init__(self, num_classes: int, *, gamma: float = 3.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        with torch.no_grad():
            p_y = target_log_prob(F.log_softmax(upcast(logits), dim=1), targets).exp()
        return focal_loss(logits, targets, flsd_gammas(p_y, self.gamma))
