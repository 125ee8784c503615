"""ACLS: adaptive and conditional label smoothing (Park, Noh, Oh and Ham, ICCV 2023).

    L = CE + weight * R,
    R = pos_lambda * (1/N)       sum_i sum_{k : l_ik = max_j l_ij}  relu(l_ik - margin)^2
      + neg_lambda * (1/(N(K-1))) sum_i sum_{k : l_ik < max_j l_ij}  relu(sg(max_j l_ij) - l_ik - margin)^2

The positive term pulls the winning logit down once it exceeds `margin` (conditional: only the
predicted class); the negative term pulls the other logits towards the (stopped-gradient, sg)
winner once they fall more than `margin` behind it (adaptive: the push grows with the distance,
quadratically, unlike MbLS's linear hinge). Defaults: pos_lambda 1, neg_lambda 0.1, weight 0.1,
margin 10, as in the authors' configuration (cvlab-yonsei/ACLS, configs/loss/acls.yaml).

calbench follows the authors' code (calibrate/losses/acls.py) for every detail, since the
paper's printed equation could not be checked here against it:
- the "positive" set is every class whose logit equals the row maximum (ties all count), found
  on detached logits; the positive distance is the RAW logit minus the margin (not a distance to
  anything), with the gradient flowing through it;
- the negative distance uses the detached maximum, so only the non-maximal logits receive its
  gradient;
- normalisers N for the positive and N (K - 1) for the negative sum, whatever the number of
  ties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.registry import METHODS


def acls_regulariser(logits: torch.Tensor, margin: float, pos_lambda: float, neg_lambda: float) -> torch.Tensor:
    """R of the module docstring, for (N, K) logits."""
    n, k = logits.shape
    top = logits.detach().max(dim=1, keepdim=True).values
    is_max = logits.detach() == top
    positive = torch.where(is_max, F.relu(logits - margin) ** 2, torch.zeros_like(logits))
    negative = torch.where(is_max, torch.zeros_like(logits), F.relu(top - logits - margin) ** 2)
    reg = pos_lambda * positive.sum() / n
    if k > 1:
        reg = reg + neg_lambda * negative.sum() / (n * (k - 1))
    return reg


@METHODS.register("acls", description="Adaptive and conditional label smoothing: squared hinges on the max logit and on distances to it.",
                  paper="Park et al., ICCV 2023")
class ACLS(Method):
    """CE + weight * (pos_lambda * positive + neg_lambda * negative) (module docstring).

    `stops_gradient`: the negative term's maximum is detached, so the gradient is not the
    derivative of the value (finite differences see the maximum move); tests check it analytically.
    """

    stops_gradient = True

    def __init__(self, num_classes: int, *, margin: float = 10.0, weight: float = 0.1,
                 pos_lambda: float = 1.0, neg_lambda: float = 0.1, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.margin, self.weight = float(margin), float(weight)
        self.pos_lambda, self.neg_lambda = float(pos_lambda), float(neg_lambda)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        ce = cross_entropy(logits, targets)
        if self.weight == 0.0:
            return ce                                    # the limit, exactly
        return ce + self.weight * acls_regulariser(logits, self.margin, self.pos_lambda, self.neg_lambda)
