"""Fused cross-entropy + logit-distance penalty, shared by mbls, cals-hr and cals-alm.

loss = mean_i(-log p_iy) + (1/(N K)) sum_ik P_k(d_ik),  d_ik = max_j l_ij - l_ik (max NOT detached).

Autograd through the dozen element-wise ops of the plain expression costs 4-10x cross-entropy on
the CPU (torch.max with indices alone is a slow reduction). This module computes the value and the
analytic gradient in one `autograd.Function` with a handful of vectorised ops:

  dL/dl_ik = (p_ik - 1[k = y_i]) / N + (1/(N K)) (-P'_k(d_ik) + 1[k = argmax_i] sum_j P'_j(d_ij))

The argmax indicator is `l_ik == max_j l_ij`, split evenly among ties (the sub-gradient that
`torch.amax` uses). log p_y = l_y - max l + log(max p), exact because max_k p_k = 1 / sum exp(l - max l)
and max p >= 1/K never underflows. First-order only (no double backward), which is all training
and the CALS tests need; gradcheck in float64 verifies the analytic gradient.
"""

from __future__ import annotations

from typing import Callable

import torch

# penalty(logits, row_max) -> (sum_ik P_k(d_ik) as a 0-d tensor, slope (N, K), factor) where
# dP_k/dd_ik = factor * slope_ik; `slope` may be a fresh buffer that the backward overwrites.
Penalty = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor, float]"]


class _CEPlusDistancePenalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, penalty):
        n, k = logits.shape
        p = torch.softmax(logits, dim=1)
        row_max = logits.amax(dim=1, keepdim=True)
        t = targets.long().unsqueeze(1)
        log_py = logits.gather(1, t) - row_max + p.amax(dim=1, keepdim=True).log()
        total, slope, factor = penalty(logits, row_max)
        ctx.save_for_backward(logits, p, t, row_max, slope)
        ctx.scale = float(factor) / k
        return (total / k - log_py.sum()) / n

    @staticmethod
    def backward(ctx, grad_out):
        logits, p, t, row_max, slope = ctx.saved_tensors
        n = logits.shape[0]
        grad = p.clone()  # saved tensors stay intact: gradcheck and retain_graph backward twice
        grad.scatter_add_(1, t, torch.full(t.shape, -1.0, dtype=grad.dtype, device=grad.device))
        count = slope.sum(dim=1, keepdim=True)
        grad.sub_(slope, alpha=ctx.scale)
        at_max = torch.eq(logits, row_max, out=torch.empty_like(grad))
        ties = at_max.sum(dim=1, keepdim=True)
        grad.addcmul_(at_max, count.mul_(ctx.scale).div_(ties))
        return grad.mul_(grad_out / n), None, None


def ce_plus_distance_penalty(logits: torch.Tensor, targets: torch.Tensor, penalty: Penalty) -> torch.Tensor:
    """(N, K) logits (float32/float64; autocast off inside), (N,) targets with no ignored rows."""
    with torch.autocast(logits.device.type, enabled=False):
        return _CEPlusDistancePenalty.apply(logits, targets, penalty)


def hinge_penalty(margin: float, weights: torch.Tensor | float) -> Penalty:
    """P_k(d) = w_k relu(d - margin): MbLS (scalar weight) and CALS-HR (per-class multipliers)."""

    def penalty(logits, row_max):
        excess = torch.sub(row_max - margin, logits).clamp_min_(0.0)
        if isinstance(weights, torch.Tensor):
            w = weights.to(logits.dtype)
            total = (excess @ w).sum()
            return total, excess.sign_().mul_(w), 1.0
        total = excess.sum() * weights
        return total, excess.sign_(), float(weights)

    return penalty


def phr_penalty(margin: float, multipliers: torch.Tensor, penalties: torch.Tensor) -> Penalty:
    """PHR (CALS eq. 16) on h = d/m - 1: P = (relu(lam + rho h)^2 - lam^2) / (2 rho), P' = relu(lam + rho h).

    The closed form equals the two-branch definition: for lam + rho h >= 0,
    lam h + rho h^2 / 2 = ((lam + rho h)^2 - lam^2) / (2 rho); otherwise -lam^2 / (2 rho).
    """

    def penalty(logits, row_max):
        lam, rho = multipliers.to(logits.dtype), penalties.to(logits.dtype)
        # lam + rho (d/m - 1) = (lam - rho) + (rho/m)(max - l)
        active = torch.addcmul(lam - rho, torch.sub(row_max, logits), rho / margin).clamp_min_(0.0)
        half_inv_rho = 0.5 / rho
        total = ((active * active) @ half_inv_rho).sum() - logits.shape[0] * (lam * lam * half_inv_rho).sum()
        return total, active, 1.0 / margin

    return penalty


def generic_penalty(margin: float, value: Callable, derivative: Callable) -> Penalty:
    """Any P(h) with its derivative P'(h), h = d/m - 1 (CALS eqs. 17, 18: P2, P3)."""

    def penalty(logits, row_max):
        h = torch.sub(row_max, logits).div_(margin).sub_(1.0)
        return value(h).sum(), derivative(h), 1.0 / margin

    return penalty
