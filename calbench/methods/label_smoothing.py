"""Label smoothing (Szegedy et al., CVPR 2016; for calibration: Mueller et al., NeurIPS 2019).

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, target_log_prob
from calbench.methods.registry import METHODS


@METHODS.register("ls", description="Label smoothing: cross-entropy to a target mixed with the uniform.",
                  paper="Szegedy et al., CVPR 2016; Mueller et al., NeurIPS 2019")
class LabelSmoothing(Method):
    """mean_i [ (1 - alpha)(-log p_iy) + alpha * mean_k(-log p_ik) ]  (docs/methods.md; CALS App. C alpha=0.05)."""

    def __init__(self, num_classes: int, *, alpha: float = 0.05, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.alpha = float(alpha)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.alpha == 0.0:
            return cross_entropy(logits, targets)     # the limit, exactly
        log_p = F.log_softmax(logits, dim=1)
        nll = -target_log_prob(log_p, targets)
        uniform = -log_p.mean(dim=1)
        return ((1.0 - self.alpha) * nll + self.alpha * uniform).mean()
