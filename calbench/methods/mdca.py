"""Batch-level calibration penalties on top of a classification loss: MDCA and DCA.

- MDCA, multi-class difference of confidence and accuracy (Hebbalaguppe et al., CVPR 2022, eq. 3):
      L = L_base + beta * (1/K) sum_k | (1/N) sum_i p_ik - (1/N) sum_i y_ik |
  with y the one-hot targets, over the rows of the batch. The paper tabulates it on three base
  losses: NLL (cross-entropy), focal loss and label smoothing ("NLL+MDCA", "FL+MDCA", "LS+MDCA").
- DCA, difference between confidence and accuracy (Liang et al., BMVC 2020):
      L = CE + beta * | (1/N) sum_i max_k p_ik - (1/N) sum_i 1[argmax_k p_ik = y_i] |
  the accuracy term is piecewise constant, so the gradient flows through the confidences only.

Defaults follow the MDCA authors' released scripts (mdca-loss/MDCA-Calibration, scripts/*.sh):
beta = 1 for MDCA and DCA, focal gamma = 1 with FL+MDCA, smoothing alpha = 0.1 with LS+MDCA.
Where calbench and the authors' code differ:
- the base loss is calbench's own registered method ("ce", "fl", "ls"), so `beta = 0` is that
  method bit for bit. calbench's "ls" mixes the one-hot target with the uniform over all K classes
  ((1 - alpha) y + alpha / K); the MDCA code's label smoothing puts 1 - alpha on the target and
  alpha / (K - 1) on each other class. At alpha = 0.1 and K = 10 that is a target weight of
  0.91 (calbench) against 0.90 (authors' code).
- the MDCA code loops over the K classes in Python; calbench takes one (K,) mean per batch (same
  value, O(N K)).
On the CPU, MDCA (on each base) and DCA run as one C kernel (row_losses.py: the softmax, the base
loss, the batch means and the analytic gradient in two passes over the rows, about 1.2x
cross-entropy where autograd through the nine ops cost 3x); other devices use autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.errors import ConfigError
from calbench.methods import row_losses
from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.registry import METHODS

BASE_LOSSES = ("ce", "fl", "ls")


def mdca_penalty(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(1/K) sum_k |mean_i p_ik - mean_i y_ik| over the rows (MDCA eq. 3)."""
    n, k = logits.shape
    mean_probs = F.softmax(logits, dim=1).mean(dim=0)
    frequencies = torch.bincount(targets.long(), minlength=k).to(mean_probs.dtype) / n
    return (mean_probs - frequencies).abs().mean()


def dca_penalty(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """|mean confidence - accuracy| over the rows (Liang et al.)."""
    confidence, predicted = F.softmax(logits, dim=1).max(dim=1)
    accuracy = (predicted == targets).to(confidence.dtype).mean()
    return (confidence.mean() - accuracy).abs()


@METHODS.register("mdca", description="Base loss (ce / fl / ls) + beta x multi-class |mean confidence - frequency| over the batch.",
                  paper="Hebbalaguppe et al., CVPR 2022")
class MDCA(Method):
    """L_base + beta (1/K) sum_k |mean_i p_ik - mean_i y_ik|; see the module docstring.

    `base` picks the classification loss ("ce", "fl" with `gamma`, "ls" with `alpha`); the
    hyper-parameter of a base that is not picked is ignored.
    """

    def __init__(self, num_classes: int, *, beta: float = 1.0, base: str = "ce", gamma: float = 1.0,
                 alpha: float = 0.1, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        if base not in BASE_LOSSES:
            raise ConfigError(f"mdca.base: expected one of {', '.join(BASE_LOSSES)}, got {base!r}")
        self.beta, self.base = float(beta), base
        options = {"fl": {"gamma": float(gamma)}, "ls": {"alpha": float(alpha)}}.get(base, {})
        self.base_loss = METHODS.get(base)(num_classes, ignore_index=ignore_index, **options)
        # the kernel's base: label smoothing's alpha, focal's gamma (0, 0: cross-entropy)
        self.kernel_base = (options.get("alpha", 0.0), options.get("gamma", 0.0))

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.beta == 0.0:
            return self.base_loss.loss_rows(logits, targets)   # the limit, exactly
        fused = row_losses.mdca(logits, targets, self.beta, *self.kernel_base)
        if fused is not None:                            # the C kernel (row_losses.py)
            return fused
        return self.base_loss.loss_rows(logits, targets) + self.beta * mdca_penalty(logits, targets)


@METHODS.register("dca", description="Cross-entropy + beta x |mean confidence - accuracy| over the batch.",
                  paper="Liang et al., BMVC 2020")
class DCA(Method):
    """CE + beta |mean_i conf_i - mean_i correct_i| (beta = 1, as the MDCA authors run it)."""

    def __init__(self, num_classes: int, *, beta: float = 1.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.beta = float(beta)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.beta == 0.0:
            return cross_entropy(logits, targets)
        fused = row_losses.dca(logits, targets, self.beta)
        if fused is not None:                            # the C kernel (row_losses.py)
            return fused
        return cross_entropy(logits, targets) + self.beta * dca_penalty(logits, targets)
