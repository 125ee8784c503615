"""Cross-entropy, the baseline every table starts from.

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import torch

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.registry import METHODS


@METHODS.register("ce", description="Cross-entropy (the uncalibrated baseline).",
                  paper="baseline (no paper)")
class CrossEntropy(Method):
    """Mean of -log p_y over non-ignored rows."""

    def __init__(self, num_classes: int, *, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        return cross_entropy(logits, targets)
