"""Long-tail baselines that shift the logits by the train label prior inside the softmax.

- Logit adjustment (Menon et al., ICLR 2021, eq. 10, the logit-adjusted loss):
      L = mean_i -log softmax(l_i + tau log pi)_{y_i},   pi_k = n_k / sum_j n_j
  tau = 1 is the paper's default (and the Fisher-consistent choice for the balanced error).
- Balanced softmax (Ren et al., NeurIPS 2020, eq. 4):
      L = mean_i -log [ n_y exp(l_iy) / sum_k n_k exp(l_ik) ] = CE(l_i + log n, y_i)
  which is logit adjustment with tau = 1 (log n and log pi differ by a constant per row, which
  the softmax ignores); calbench keeps both names since both are cited as baselines.

Both train on the adjusted logits and PREDICT with the raw ones (the model output; neither paper
adjusts at test time), which is what the engine evaluates. The counts n_k are the train split's,
given once by the engine (`needs_class_counts`). A class with no train sample is counted as 1 (its
log-prior would otherwise be -inf). Both raise if the counts were never given, since the loss
would silently be plain cross-entropy.
"""

from __future__ import annotations

import torch

from calbench.methods.base import Method
from calbench.methods.common import cross_entropy
from calbench.methods.registry import METHODS


def cached_shift(method: Method, dtype: torch.dtype, scale: float, normalise: bool) -> torch.Tensor:
    """scale * log(counts [/ sum counts]) in `dtype`, recomputed only when the counts change.

    The loss is called every step, the counts once per run: recomputing the shift (five small ops)
    each step cost as much as the cross-entropy itself at B = 128, K = 200. The key holds the
    buffer's identity and `_version`, which set_class_counts, load_state_dict and `.to()` move.
    """
    counts = method.class_counts
    key = (id(counts), counts._version, dtype, scale, normalise)
    cache = getattr(method, "_shift_cache", None)
    if cache is None or cache[0] != key or cache[1] is not counts:
        checked = checked_counts(counts, method.name)
        shift = torch.log(checked / checked.sum()) if normalise else torch.log(checked)
        cache = (key, counts, (shift if scale == 1.0 else scale * shift).to(dtype))
        method._shift_cache = cache
    return cache[2]


def checked_counts(counts: torch.Tensor, method: str) -> torch.Tensor:
    """The (K,) train counts with empty classes counted as 1; an error if they were never given."""
    if not bool((counts > 0).any()):
        raise ValueError(f"{method}: the train class counts were never given (set_class_counts)")
    return counts.clamp_min(1.0)


@METHODS.register("logit-adjust", description="Logit-adjusted cross-entropy: CE(logits + tau log prior); needs the train class counts.",
                  paper="Menon et al., ICLR 2021")
class LogitAdjustment(Method):
    """mean_i -log softmax(l_i + tau log pi)_{y_i}, tau = 1 (module docstring)."""

    needs_class_counts = True

    def __init__(self, num_classes: int, *, tau: float = 1.0, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.tau = float(tau)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.tau == 0.0:
            return cross_entropy(logits, targets)        # the limit, exactly
        return cross_entropy(logits + cached_shift(self, logits.dtype, self.tau, True), targets)


@METHODS.register("balanced-softmax", description="Balanced softmax: CE(logits + log class counts); needs the train class counts.",
                  paper="Ren et al., NeurIPS 2020")
class BalancedSoftmax(Method):
    """mean_i -log [n_y exp(l_iy) / sum_k n_k exp(l_ik)] (module docstring)."""

    needs_class_counts = True

    def __init__(self, num_classes: int, *, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        return cross_entropy(logits + cached_shift(self, logits.dtype, 1.0, False), targets)
