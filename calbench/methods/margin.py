"""Margin-based label smoothing (MbLS; Liu et al., CVPR 2022).

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import torch

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.margin_penalty import ce_plus_distance_penalty, hinge_penalty
from calbench.methods.registry import METHODS


@METHODS.register("mbls", description="Margin-based label smoothing: CE + weight x relu(logit distance - margin).",
                  paper="Liu et al., CVPR 2022")
class MarginLabelSmoothing(Method):
    """CE + weight * mean over N*K of relu(d_ik - margin), d_ik = max_j l_ij - l_ik (MbLS eq. 3).

    margin = 10 for vision, 6 for text (set it in the recipe); weight = 0.1. Value and gradient are
    computed in one pass by `margin_penalty` (a C kernel on the CPU, PyTorch ops elsewhere).
    """

    def __init__(self, num_classes: int, *, margin: float = 10.0, weight: float = 0.1,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.margin = float(margin)
        self.weight = float(weight)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.weight == 0.0:
            return cross_entropy(logits, targets)
        return ce_plus_distance_penalty(logits, targets, hinge_penalty(self.margin, self.weight))
