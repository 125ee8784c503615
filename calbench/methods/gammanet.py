"""Gamma-net + SECE meta-regularisation (Wang & Golebiowski, TMLR 2024, arXiv:2303.15057).

This is calbench's generic hook for methods that train parameters of their own with a meta step
(see calbench/methods/base.py): `needs_features` makes the engine pass the backbone's penultimate
features to `loss`; `needs_meta_split` makes it carve a seeded meta-validation split out of train
and call `meta_step(head=..., features=..., targets=..., meta_features=..., meta_targets=..., lr=...)`
once per training batch, before the real backbone step; `extra_parameters()` are never put in the
backbone optimizer (the method owns an Adam optimizer for them).

No official code exists. Choices, following the paper's description and the meta-calibration
code it extends (Bohdal et al.), as docs/methods.md records them:
- gamma-net: Linear(d -> 1) on DETACHED penultimate features, gamma_i = gamma_max * sigmoid(s_i / t).
- backbone step: focal loss with the per-sample gammas, gammas detached.
- meta step: one virtual SGD step (learning rate = the backbone's current lr) of the classifier
  head only, with create_graph=True, on the focal loss; SECE of the updated head on the meta batch;
  gradient into the gamma-net only; Adam(meta_lr).
- The gamma-net's Adam state (moments, step counts) and the last gamma mean are part of the
  method's state_dict (`get_extra_state`, plain tensors and containers), so a resumed run equals
  an uninterrupted one.
Formulas and conventions: docs/methods.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from calbench.methods.base import Method
from calbench.methods.common import upcast
from calbench.methods.focal import focal_loss
from calbench.methods.registry import METHODS


def sece(probs: torch.Tensor, targets: torch.Tensor, bandwidth: float = 0.01) -> torch.Tensor:
    """Differentiable SECE: mean_i |r_i - acc_hat_i|, acc_hat = Gaussian-kernel regression of c on r.

    acc_hat_i = sum_j K(r_i - r_j) c_j / sum_j K(r_i - r_j) (the sample itself included);
    r = max probability (differentiable), c = correctness (a constant).
    """
    r, pred = probs.max(dim=1)
    c = (pred == targets).to(r.dtype)
    diff = r.unsqueeze(1) - r.unsqueeze(0)
    weights = torch.exp(-0.5 * (diff / bandwidth) ** 2)
    acc_hat = (weights @ c) / weights.sum(dim=1)
    return (r - acc_hat).abs().mean()


def _head_rows(logits: torch.Tensor) -> torch.Tensor:
    return logits.movedim(1, -1).reshape(-1, logits.shape[1]) if logits.dim() > 2 else logits


@METHODS.register("gammanet-sece", description="Focal loss with per-sample gammas from a meta-learned gamma-net trained on SECE.",
                  paper="Wang & Golebiowski, TMLR 2024")
class GammaNetSECE(Method):
    """Focal loss with per-sample gammas from a gamma-net meta-trained on SECE (Wang & Golebiowski).

    THE generic hook for methods with parameters of their own and a meta step (the engine has no
    special case for this class; any method can use the same attributes):
      - `needs_features = True`: `loss(logits, targets, features=penultimate)`.
      - `needs_meta_split = True`: the engine carves a seeded meta-validation split out of train
        and, once per training batch BEFORE the real step, calls
        `meta_step(head=classifier_head, features=batch_features.detach(), targets=batch_targets,
        meta_features=meta_batch_features.detach(), meta_targets=meta_batch_targets, lr=current_lr)`.
        Here: a look-ahead SGD step of the head via `torch.func.functional_call` (create_graph),
        SECE of the looked-ahead head on the meta batch, one Adam(meta_lr) step of the gamma-net.
        The head itself is never modified and gets no .grad. Returns {"meta_sece": float}.
      - `extra_parameters()`: the gamma-net's parameters, kept out of the backbone optimizer.
    Hyper-parameters: gamma_max (5), temperature t (1), SECE bandwidth (0.01), meta_lr (1e-3).
    """

    needs_features = True
    needs_meta_split = True

    def __init__(self, num_classes: int, *, gamma_max: float = 5.0, temperature: float = 1.0,
                 bandwidth: float = 0.01, meta_lr: float = 1e-3, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.gamma_max, self.temperature = float(gamma_max), float(temperature)
        self.bandwidth, self.meta_lr = float(bandwidth), float(meta_lr)
        self.gamma_net = nn.LazyLinear(1)
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict | None = None   # loaded before the optimizer exists
        self._last_gamma = float("nan")

    def gammas(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) detached features -> (N,) gammas in (0, gamma_max)."""
        score = self.gamma_net(features.detach().float()).squeeze(1)
        return self.gamma_max * torch.sigmoid(score / self.temperature)

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.gamma_net.parameters())

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        gamma = self.gammas(features).detach()
        self._last_gamma = float(gamma.mean())
        return focal_loss(logits, targets, gamma)

    def meta_step(self, *, head, features, targets, meta_features, meta_targets, lr) -> dict:
        features, meta_features = features.detach().float(), meta_features.detach().float()
        if self._optimizer is None:
            self._make_optimizer(_head_rows(features)[:1])
        params = {k: v for k, v in head.named_parameters()}
        names = list(params)
        with torch.autocast(features.device.type, enabled=False):
            logits = _head_rows(functional_call(head, params, (features,)))
            rows_t = targets.reshape(-1)
            feats = _head_rows(features)
            keep = rows_t != self.ignore_index
            logits, rows_t, feats = logits[keep], rows_t[keep], feats[keep]
            if rows_t.numel() == 0:
                return {}
            inner = focal_loss(logits, rows_t, self.gammas(feats))
            grads = torch.autograd.grad(inner, [params[n] for n in names], create_graph=True)
            updated = {n: params[n] - lr * g for n, g in zip(names, grads)}
            meta_logits = _head_rows(functional_call(head, updated, (meta_features,)))
            meta_t = meta_targets.reshape(-1)
            keep = meta_t != self.ignore_index
            outer = sece(F.softmax(upcast(meta_logits[keep]), dim=1), meta_t[keep], self.bandwidth)
            meta_grads = torch.autograd.grad(outer, list(self.gamma_net.parameters()), allow_unused=True)
        for p, g in zip(self.gamma_net.parameters(), meta_grads):
            p.grad = None if g is None else g.detach()
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return {"meta_sece": float(outer.detach())}

    def _make_optimizer(self, sample_features: torch.Tensor) -> None:
        """Adam over the gamma-net (materialised by one forward), with any state loaded earlier."""
        self.gammas(sample_features)
        self._optimizer = torch.optim.Adam(self.gamma_net.parameters(), lr=self.meta_lr)
        if self._pending_optimizer_state is not None:
            self._optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None

    def get_extra_state(self) -> dict:
        """Saved in state_dict() beside the gamma-net's weights: Adam's state and the last gamma mean."""
        optimizer = self._optimizer.state_dict() if self._optimizer is not None else self._pending_optimizer_state
        return {"optimizer": optimizer, "last_gamma": self._last_gamma}

    def set_extra_state(self, state: dict) -> None:
        # load_state_dict reaches this module before the (lazy) gamma-net's weights are loaded, so
        # a fresh instance keeps the optimizer state until meta_step creates the optimizer
        self._last_gamma = float(state["last_gamma"])
        if self._optimizer is not None and state["optimizer"] is not None:
            self._optimizer.load_state_dict(state["optimizer"])
        else:
            self._optimizer, self._pending_optimizer_state = None, state["optimizer"]

    def stats(self) -> dict[str, float]:
        return {} if self._last_gamma != self._last_gamma else {"gamma_mean": self._last_gamma}
