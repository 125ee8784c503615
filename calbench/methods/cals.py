"""Class-adaptive label smoothing (CALS; Liu et al., CVPR 2023): the heuristic (HR) and ALM variants.

Both replace MbLS's single weight by one multiplier per class, adapted at the end of every
epoch from the VALIDATION logits (never the test split), with the inner SGD steps of the epoch
using frozen multipliers (Algorithm 2, lines 2-7). Formulas, defaults and every choice where
calbench departs from the authors' code: docs/methods.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.errors import ConfigError
from calbench.methods.base import Method, flatten_rows
from calbench.methods.margin_penalty import (ce_plus_distance_penalty, generic_penalty, hinge_penalty,
                                             phr_penalty)
from calbench.methods.registry import METHODS

PENALTIES = ("phr", "p2", "p3")


def penalty_value(z: torch.Tensor, rho: torch.Tensor, lam: torch.Tensor, kind: str) -> torch.Tensor:
    """P(z, rho, lambda) of CALS App. A, eqs. (16) PHR, (17) P2, (18) P3 (elementwise, broadcast)."""
    if kind == "phr":
        active = lam + rho * z >= 0
        return torch.where(active, lam * z + 0.5 * rho * z * z, -lam * lam / (2.0 * rho))
    # P2 / P3: separate branches on clamped copies so the unused branch can never divide by 0.
    zp, zn = z.clamp(min=0.0), z.clamp(max=0.0)
    negative = lam * zn / (1.0 - rho * zn)
    positive = lam * zp + lam * rho * zp * zp
    if kind == "p2":
        positive = positive + rho * rho * zp * zp * zp / 6.0
    return positive + negative


def penalty_derivative(z: torch.Tensor, rho: torch.Tensor, lam: torch.Tensor, kind: str) -> torch.Tensor:
    """P'(z) = dP/dz; P'(0) = lambda for every penalty (Axiom 2)."""
    if kind == "phr":
        return (lam + rho * z).clamp(min=0.0)
    zp, zn = z.clamp(min=0.0), z.clamp(max=0.0)
    pos = lam + 2.0 * lam * rho * zp
    if kind == "p2":
        pos = pos + 0.5 * rho * rho * zp * zp
    neg = lam / (1.0 - rho * zn) ** 2
    return torch.where(z >= 0, pos, neg)


@METHODS.register("cals-hr", description="Class-adaptive label smoothing, multipliers scaled by a heuristic rule (eq. 15).",
                  paper="Liu et al., CVPR 2023")
class CalsHR(Method):
    """CE + mean over N*K of lambda_k relu(d_ik - margin); lambda updated per epoch by eq. (15).

    P_k is the class's mean (unweighted) margin penalty relu(d_ik - margin) over the validation
    rows. After each epoch: lambda_k *= mu if P_k_new > tau P_k_old; lambda_k /= mu if
    P_k_old > tau P_k_new; clamped to [1e-6, 1e6]. The first epoch only records P_k.
    Paper over the authors' code (by-liu/CALS, `LogitMarginPlus`), each written in docs/methods.md:
    - eq. (15) leaves P_k open; calbench uses the unweighted violation, so that a change of lambda
      alone never feeds back into the next comparison. The code weights P_k by lambda_k.
    - the code updates every epoch too (`step_size: 1` in its config), but skips the update while
      the previous penalty summed over classes is zero; calbench has no such gate (eq. 15 has none):
      after the first epoch, a class whose penalty appears where there was none gets lambda * mu.
    """

    def __init__(self, num_classes: int, *, margin: float = 10.0, lambda_init: float = 0.1,
                 mu: float = 1.1, tau: float = 1.1, lambda_min: float = 1e-6,
                 lambda_max: float = 1e6, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.margin, self.mu, self.tau = float(margin), float(mu), float(tau)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.register_buffer("multipliers", torch.full((num_classes,), float(lambda_init), dtype=torch.float64))
        self.register_buffer("prev_penalty", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        return ce_plus_distance_penalty(logits, targets, hinge_penalty(self.margin, self.multipliers))

    @torch.no_grad()
    def end_epoch(self, val_logits, val_targets, epoch: int) -> None:
        logits, _ = flatten_rows(val_logits, val_targets, self.ignore_index)
        if logits.shape[0] == 0:
            return
        logits = logits.double()
        new = F.relu(logits.max(dim=1, keepdim=True).values - logits - self.margin).mean(dim=0)
        if bool(self.has_prev):
            old, lam = self.prev_penalty, self.multipliers.double()
            lam = torch.where(new > self.tau * old, lam * self.mu,
                              torch.where(old > self.tau * new, lam / self.mu, lam))
            self.multipliers.copy_(lam.clamp(self.lambda_min, self.lambda_max))
        self.prev_penalty.copy_(new)
        self.has_prev.fill_(True)

    def stats(self) -> dict[str, float]:
        lam = self.multipliers.double()
        return {"lambda_min": float(lam.min()), "lambda_mean": float(lam.mean()),
                "lambda_max": float(lam.max())}


@METHODS.register("cals-alm", description="Class-adaptive label smoothing, multipliers learned by an augmented Lagrangian (Alg. 2).",
                  paper="Liu et al., CVPR 2023")
class CalsALM(Method):
    """CE + mean over N*K of P(h_ik, rho_k, lambda_k), h_ik = d_ik / margin - 1 (CALS eq. 11, Alg. 2).

    end_epoch (Alg. 2 lines 8-16, on validation logits):
      lambda_k <- clamp(mean_val clamp(P'(h_ik, rho_k, lambda_k), lmin, lmax), lmin, lmax)   (eq. 12)
      c_k = mean_val h_ik; if the epoch is a rho-update epoch and a previous c_k exists and
      c_k > tau * max(0, c_k_prev): rho_k <- rho_growth * rho_k; rho clamped to [rho_min, rho_max];
      c_k_prev <- c_k every epoch.
    Choices recorded here:
    - rho-update period: Algorithm 2 line 11 as printed tests the constraint after EVERY epoch, but
      the text (Sec. 5, "we update the penalty parameters rho every 10 epochs") and Table 4
      ("Period of penalty parameter update: 10") say every 10 epochs; calbench follows the text:
      rho may grow only after epochs whose count (epoch + 1) is a multiple of `rho_step`
      (epochs 9, 19, ... counted from 0). `rho_step: 1` gives the per-epoch reading of Alg. 2.
    - rho is clamped to [1, 10] as in the authors' code (the paper states no bound).
    - As in the authors' class-wise augmented Lagrangian (by-liu/CALS, `AugLagrangianClass`): one
      rho per class, the growth test of Alg. 2 line 11, `c_k > tau * max(0, c_k_prev)`, and the
      penalty averaged over N x K (eq. 11).
    - The loss uses the fused value-and-gradient kernel of `margin_penalty` (PHR in closed form).
    - The inner clamp of P' uses [lambda_min, lambda_max] like the outer projection.
    - The update is computed in float64 from all validation rows (ignore_index rows dropped).
    """

    def __init__(self, num_classes: int, *, margin: float = 10.0, penalty: str = "phr",
                 lambda_init: float = 1e-6, lambda_min: float = 1e-6, lambda_max: float = 1e6,
                 rho_init: float = 1.0, rho_min: float = 1.0, rho_max: float = 10.0,
                 rho_growth: float = 1.2, tau: float = 0.9, rho_step: int = 10,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        if penalty not in PENALTIES:
            raise ConfigError(f"cals-alm: penalty must be one of {', '.join(PENALTIES)}, got '{penalty}'")
        if margin <= 0 or rho_step < 1:
            raise ConfigError("cals-alm: margin must be > 0 and rho_step >= 1")
        self.margin, self.penalty = float(margin), penalty
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.rho_min, self.rho_max = float(rho_min), float(rho_max)
        self.rho_growth, self.tau, self.rho_step = float(rho_growth), float(tau), int(rho_step)
        self.register_buffer("multipliers", torch.full((num_classes,), float(lambda_init), dtype=torch.float64))
        self.register_buffer("penalties", torch.full((num_classes,), float(rho_init), dtype=torch.float64))
        self.register_buffer("prev_constraint", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.penalty == "phr":
            penalty = phr_penalty(self.margin, self.multipliers, self.penalties)
        else:
            lam, rho, kind = self.multipliers, self.penalties, self.penalty
            penalty = generic_penalty(
                self.margin,
                lambda h: penalty_value(h, rho.to(h.dtype), lam.to(h.dtype), kind),
                lambda h: penalty_derivative(h, rho.to(h.dtype), lam.to(h.dtype), kind))
        return ce_plus_distance_penalty(logits, targets, penalty)

    @torch.no_grad()
    def end_epoch(self, val_logits, val_targets, epoch: int) -> None:
        logits, _ = flatten_rows(val_logits, val_targets, self.ignore_index)
        if logits.shape[0] == 0:
            return
        logits = logits.double()
        z = (logits.max(dim=1, keepdim=True).values - logits) / self.margin - 1.0
        rho, lam = self.penalties.double(), self.multipliers.double()
        grad = penalty_derivative(z, rho, lam, self.penalty).clamp(self.lambda_min, self.lambda_max)
        new_lam = grad.mean(dim=0).clamp(self.lambda_min, self.lambda_max)
        constraint = z.mean(dim=0)
        if (epoch + 1) % self.rho_step == 0 and bool(self.has_prev):
            worse = constraint > self.tau * self.prev_constraint.clamp(min=0.0)
            rho = torch.where(worse, rho * self.rho_growth, rho)
        self.penalties.copy_(rho.clamp(self.rho_min, self.rho_max))
        self.multipliers.copy_(new_lam)
        self.prev_constraint.copy_(constraint)
        self.has_prev.fill_(True)

    def stats(self) -> dict[str, float]:
        lam, rho = self.multipliers.double(), self.penalties.double()
        return {"lambda_min": float(lam.min()), "lambda_mean": float(lam.mean()),
                "lambda_max": float(lam.max()), "rho_mean": float(rho.mean()),
                "rho_max": float(rho.max())}
