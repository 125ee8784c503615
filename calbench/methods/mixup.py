"""Mixup (Zhang et al., ICLR 2018; for calibration: Thulasidasan et al., NeurIPS 2019) and RegMixup
(Pinto et al., NeurIPS 2022): batch methods that mix the training inputs in `transform_batch`.

Mixing: lam ~ Beta(alpha, alpha) (RegMixup: Beta(alpha, beta)), one lam per batch, and one
permutation pi of the batch; x~_i = lam x_i + (1 - lam) x_pi(i). Both draws come ONLY from the
`generator` the engine passes (the seeded training stream), so a resumed run mixes identically:
the permutation by torch.randperm, lam by numpy's Beta sampler seeded from one 62-bit draw of
that generator (torch has no Beta sampler that takes a generator). `ctx` carries lam and pi.
alpha = 0 means no mixing (lam = 1), the limit in which both losses are cross-entropy exactly.

- mixup:    L = lam CE(f(x~), y) + (1 - lam) CE(f(x~), y_pi)   (= CE to the mixed soft label)
  Zhang et al. use alpha = 1 on CIFAR; Thulasidasan et al. find the best calibration for alpha
  in about [0.2, 0.4]; calbench's default is Zhang et al.'s 1. The model is trained on the mixed
  batch only, as in both papers.
- regmixup: the batch becomes [x; x~] (twice as many rows; the targets [y; y]) and
      L = ( sum_clean CE + eta * sum_mixed [lam CE(., y) + (1 - lam) CE(., y_pi)] ) / (N (1 + eta))
  i.e. the paper's CE(clean) + eta * mixup-CE divided by (1 + eta). With eta = 1 that is the
  authors' code (FrancescoPinto/RegMixup, models/regmixup.py), which averages F.cross_entropy over
  the 2N rows (half the paper's sum); the constant factor only rescales the learning rate.
  alpha = beta = 20, the authors' code default (their CIFAR-10 setting); the paper reports
  tuning alpha on validation per dataset (not checked here for CIFAR-100).
Batch methods mix whole samples: no row of their batch may be ignored (classification).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from calbench.methods import row_losses
from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, target_log_prob
from calbench.methods.registry import METHODS


def mixing_weight(alpha: float, beta: float, generator: torch.Generator | None) -> float:
    """lam ~ Beta(alpha, beta) drawn from `generator` (1.0 when alpha or beta is 0: no mixing)."""
    if alpha <= 0 or beta <= 0:
        return 1.0
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=device))
    return float(np.random.default_rng(seed).beta(alpha, beta))


def permutation(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """A permutation of range(n) drawn from `generator`, on `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


def mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lam x + (1 - lam) x[perm]; x itself when lam is 1."""
    return x if lam == 1.0 else lam * x + (1.0 - lam) * x[perm]


def mixed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, partners: torch.Tensor,
                        lam: float) -> torch.Tensor:
    """Per-row lam CE(., y) + (1 - lam) CE(., y_pi)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(lam * target_log_prob(log_p, targets) + (1.0 - lam) * target_log_prob(log_p, partners))


def check_whole_samples(method: str, rows: int, expected: int) -> None:
    if rows != expected:
        raise ValueError(f"{method}: mixes whole samples; the batch has {rows} rows where the mixing "
                         f"covered {expected} (ignored or pixel rows are not supported)")


@METHODS.register("mixup", description="Mixup: train on convex combinations of sample pairs and of their labels.",
                  paper="Zhang et al., ICLR 2018; Thulasidasan et al., NeurIPS 2019")
class Mixup(Method):
    """lam CE(f(x~), y) + (1 - lam) CE(f(x~), y_pi), lam ~ Beta(alpha, alpha) (module docstring)."""

    def __init__(self, num_classes: int, *, alpha: float = 1.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.alpha = float(alpha)

    def transform_batch(self, x, y, generator=None):
        lam = mixing_weight(self.alpha, self.alpha, generator)
        perm = permutation(x.shape[0], generator, x.device)
        return mix(x, lam, perm), y, {"lam": torch.tensor(lam, dtype=torch.float64), "perm": perm}

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        lam = 1.0 if ctx is None else float(ctx["lam"])
        if lam == 1.0:
            return cross_entropy(logits, targets)        # unmixed (alpha 0, or no ctx): exactly CE
        check_whole_samples(self.name, targets.shape[0], ctx["perm"].numel())
        partners = targets[ctx["perm"].to(targets.device)]
        fused = row_losses.two_target_ce(logits, targets, partners, 0, 0.0, 1.0 / targets.shape[0], lam)
        if fused is not None:                            # the C kernel: one pass (row_losses.py)
            return fused
        return mixed_cross_entropy(logits, targets, partners, lam).mean()


@METHODS.register("regmixup", description="RegMixup: cross-entropy on the clean batch plus mixup cross-entropy on a mixed copy (doubles the batch).",
                  paper="Pinto et al., NeurIPS 2022")
class RegMixup(Method):
    """(CE(clean) + eta mixup-CE(mixed)) / (1 + eta) over the batch [x; x~] (module docstring)."""

    def __init__(self, num_classes: int, *, alpha: float = 20.0, beta: float = 20.0, eta: float = 1.0,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.alpha, self.beta, self.eta = float(alpha), float(beta), float(eta)

    def transform_batch(self, x, y, generator=None):
        lam = mixing_weight(self.alpha, self.beta, generator)
        perm = permutation(x.shape[0], generator, x.device)
        ctx = {"lam": torch.tensor(lam, dtype=torch.float64), "perm": perm}
        return torch.cat([x, mix(x, lam, perm)]), torch.cat([y, y]), ctx

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if ctx is None:
            return cross_entropy(logits, targets)        # evaluation: no mixed half
        lam = float(ctx["lam"])
        if lam == 1.0 and self.eta == 1.0:
            return cross_entropy(logits, targets)        # unmixed copy, equal weights: exactly CE
        n = ctx["perm"].numel()
        check_whole_samples(self.name, targets.shape[0], 2 * n)
        partners = targets[:n][ctx["perm"].to(targets.device)]
        scale = 1.0 / (n * (1.0 + self.eta))
        fused = row_losses.two_target_ce(logits, targets, partners, n, scale, self.eta * scale, lam)
        if fused is not None:                            # the C kernel: one pass (row_losses.py)
            return fused
        clean = -target_log_prob(F.log_softmax(logits[:n], dim=1), targets[:n])
        mixed = mixed_cross_entropy(logits[n:], targets[n:], partners, lam)
        return (clean.sum() + self.eta * mixed.sum()) / (n * (1.0 + self.eta))
