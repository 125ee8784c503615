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
For margin >= 0 (every published setting) calbench computes the value and gradient in one C
kernel call on the CPU (row_losses.py; about cross-entropy's cost instead of 6x), elsewhere in one
fused autograd function; a negative margin takes plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.methods import row_losses
from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, target_log_prob
from calbench.methods.registry import METHODS


def acls_regulariser(logits: torch.Tensor, margin: float, pos_lambda: float, neg_lambda: float) -> torch.Tensor:
    """R of the module docstring, for (N, K) logits (plain autograd; any margin)."""
    n, k = logits.shape
    top = logits.detach().max(dim=1, keepdim=True).values
    is_max = logits.detach() == top
    positive = torch.where(is_max, F.relu(logits - margin) ** 2, torch.zeros_like(logits))
    negative = torch.where(is_max, torch.zeros_like(logits), F.relu(top - logits - margin) ** 2)
    reg = pos_lambda * positive.sum() / n
    if k > 1:
        reg = reg + neg_lambda * negative.sum() / (n * (k - 1))
    return reg


class _CEPlusACLS(torch.autograd.Function):
    """CE + weight * R with its (stop-gradient) gradient in one pass each, for margin >= 0.

    For margin >= 0 the negative hinge relu(max - l - margin) is 0 on the maximal entries, so it
    needs no mask; the positive term is t_i relu(max_i - margin)^2 with t_i the number of tied
    maxima. Gradient: (p - y)/N - 2 weight neg_lambda relu(max - l - margin) / (N (K - 1)) on every
    entry, + 2 weight pos_lambda relu(max - margin) / N on each maximal entry.
    """

    @staticmethod
    def forward(ctx, logits, targets, margin, weight, pos_lambda, neg_lambda):
        n, k = logits.shape
        log_probs = F.log_softmax(logits, dim=1)
        ce = -target_log_prob(log_probs, targets).mean()
        top = logits.amax(dim=1, keepdim=True)
        distance = torch.sub(top - margin, logits).clamp_min_(0.0)
        pos_c, neg_c = weight * pos_lambda / n, weight * neg_lambda / (n * max(k - 1, 1))
        over = (top.squeeze(1) - margin).clamp_min(0.0)
        flat = distance.reshape(-1)
        reg = neg_c * torch.dot(flat, flat)
        # the positive term's mask of (tied) maxima is only needed once some max exceeds the margin
        is_max = (logits == top) if bool((over > 0).any()) else None
        if is_max is not None:
            reg = reg + pos_c * (is_max.sum(dim=1) * over * over).sum()
        ctx.has_positive = is_max is not None
        ctx.save_for_backward(log_probs, targets, distance, over, *(() if is_max is None else (is_max,)))
        ctx.constants = (pos_c, neg_c)
        return ce + reg

    @staticmethod
    def backward(ctx, grad_out):
        log_probs, targets, distance, over, *is_max = ctx.saved_tensors
        pos_c, neg_c = ctx.constants
        n = log_probs.shape[0]
        grad = log_probs.exp().div_(n).sub_(distance, alpha=2.0 * neg_c)
        grad.scatter_add_(1, targets.long().unsqueeze(1), torch.full_like(grad[:, :1], -1.0 / n))
        if ctx.has_positive:
            grad.addcmul_(is_max[0].to(grad.dtype), (2.0 * pos_c * over).unsqueeze(1))
        return grad.mul_(grad_out), None, None, None, None, None


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
        if self.weight == 0.0:
            return cross_entropy(logits, targets)        # the limit, exactly
        if self.margin >= 0:
            n, k = logits.shape
            fused = row_losses.ce_plus_acls(logits, targets, self.margin,
                                            self.weight * self.neg_lambda / (n * max(k - 1, 1)),
                                            self.weight * self.pos_lambda / n)
            if fused is not None:                        # the C kernel (row_losses.py), one pass
                return fused
            return _CEPlusACLS.apply(logits, targets, self.margin, self.weight, self.pos_lambda, self.neg_lambda)
        return cross_entropy(logits, targets) + self.weight * acls_regulariser(logits, self.margin, self.pos_lambda, self.neg_lambda)
