"""AdaFocal: calibration-aware adaptive focal loss (Ghosh, Schaaf and Gormley, NeurIPS 2022).

Training loss for a sample with target probability p (= p_iy), in confidence bin b:
    gamma_b >= 0:  -(1 - p)^gamma_b log p          (focal)
    gamma_b <  0:  -(1 + p)^|gamma_b| log p        (inverse focal: up-weights confident samples)
averaged over the rows. After each epoch, from the VALIDATION predictions (never test):
    E_b = mean confidence - accuracy of the validation samples in bin b  (top-1 confidence,
          B equal-mass bins of the current epoch's validation confidences)
    gamma_b <- gamma_b exp(lambda E_b)  if gamma_b > 0,  else  gamma_b exp(-lambda E_b)
    if |gamma_b| < switch: gamma_b <- -switch if gamma_b > 0 else +switch   (focal <-> inverse)
    gamma_b <- clip(gamma_b, gamma_min, gamma_max)
and the bin edges become that epoch's validation edges (gamma_b stays paired with bin index b).
A training sample falls in the bin of its DETACHED p_y: bin 0 below the first inner edge, the
last bin at or above the last inner edge, else lower <= p_y < upper. Before the first update the
bins are B equal-width bins on [0, 1] and every gamma_b = gamma_initial.

Defaults from the authors' code (3mcloud/adafocal, main.py): 15 bins, lambda 1, gamma_initial 1,
gamma_max 20, gamma_min -2, switch 0.2; the edges are those of the adaptive-ECE histogram of
focal_calibration (np.interp of the sorted confidences at positions linspace(0, n, B + 1)),
reproduced here in float64. Where calbench differs from that code:
- the authors SUM the loss over the batch; calbench AVERAGES over the rows (like every method
  here), so their learning rates correspond to calbench's scaled by the batch size;
- the validation samples are binned with the same rule as the training samples (above); the
  authors' adaptive-ECE binning uses lower < conf <= upper, which leaves the single lowest
  validation sample out of every bin;
- the base of the power is floored at 1e-6 (their code adds 1e-20), so that gradients stay finite
  for |gamma| < 1 when p_y rounds to 1.
The state (edges, gammas) is in buffers, so a resumed run continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calbench.errors import ConfigError
from calbench.methods import row_losses
from calbench.methods.base import Method, flatten_rows
from calbench.methods.common import cross_entropy, target_log_prob
from calbench.methods.registry import METHODS


def equal_mass_edges(confidences: torch.Tensor, bins: int) -> torch.Tensor:
    """(bins + 1,) edges: the sorted confidences linearly interpolated at linspace(0, n, bins + 1),
    positions past the last sample taking the largest confidence (as np.interp)."""
    ordered = confidences.sort().values
    n = ordered.numel()
    positions = torch.linspace(0, n, bins + 1, dtype=torch.float64, device=ordered.device)
    lower = positions.floor().clamp(max=n - 1)
    upper = (lower + 1).clamp(max=n - 1)
    frac = (positions - lower).clamp(0.0, 1.0)
    low_v, up_v = ordered[lower.long()], ordered[upper.long()]
    return low_v + frac * (up_v - low_v)


def bin_index(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """0 below the first inner edge, the last bin at or above the last, else lower <= v < upper."""
    inner = edges[1:-1].to(values.dtype).contiguous()
    return torch.searchsorted(inner, values.contiguous(), right=True)


def next_gammas(gammas: torch.Tensor, gaps: torch.Tensor, lam: float, switch: float,
                gamma_min: float, gamma_max: float) -> torch.Tensor:
    """The AdaFocal update of every bin's gamma from its validation gap (module docstring)."""
    step = torch.where(gammas > 0, torch.exp(lam * gaps), torch.exp(-lam * gaps))
    new = gammas * step
    flipped = torch.where(new > 0, torch.full_like(new, -switch), torch.full_like(new, switch))
    new = torch.where(new.abs() < switch, flipped, new)
    return new.clamp(gamma_min, gamma_max)


@METHODS.register("adafocal", description="Adaptive focal loss: per-confidence-bin gammas from the validation calibration gap, inverse focal below a threshold.",
                  paper="Ghosh et al., NeurIPS 2022")
class AdaFocal(Method):
    """Focal / inverse-focal loss with one gamma per confidence bin, updated in end_epoch."""

    def __init__(self, num_classes: int, *, num_bins: int = 15, lam: float = 1.0, gamma_initial: float = 1.0,
                 gamma_min: float = -2.0, gamma_max: float = 20.0, switch: float = 0.2,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        if num_bins < 1 or switch < 0 or gamma_min > gamma_max:
            raise ConfigError("adafocal: need num_bins >= 1, switch >= 0 and gamma_min <= gamma_max")
        self.num_bins, self.lam, self.switch = int(num_bins), float(lam), float(switch)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.register_buffer("edges", torch.linspace(0.0, 1.0, self.num_bins + 1, dtype=torch.float64))
        self.register_buffer("gammas", torch.full((self.num_bins,), float(gamma_initial), dtype=torch.float64))

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        inner, gammas, active = self._kernel_arrays(logits.dtype)
        if not active:
            return cross_entropy(logits, targets)        # every gamma 0: the limit, exactly
        if row_losses.kernel_for(logits, targets.shape[0]) is not None:   # the C kernel (row_losses.py)
            return row_losses.binned_focal(logits, targets, inner, gammas)
        log_py = target_log_prob(F.log_softmax(logits, dim=1), targets)
        with torch.no_grad():
            gamma = self.gammas.to(log_py.dtype)[bin_index(log_py.exp(), self.edges)]
        base = torch.where(gamma >= 0, -torch.expm1(log_py), 1.0 + log_py.exp()).clamp_min(1e-6)
        return -(base ** gamma.abs() * log_py).mean()

    def _kernel_arrays(self, dtype):
        """(inner edges, gammas) rounded to `dtype` as the PyTorch path compares and raises with
        them, contiguous float64, and whether any gamma is nonzero; cached until end_epoch or
        load_state_dict changes a buffer (its _version moves) or `.to()` replaces one (the entry
        holds the buffers, so their ids are not reused while cached)."""
        edges, gammas = self.edges, self.gammas
        key = (dtype, edges._version, gammas._version, id(edges), id(gammas))
        cache = self.__dict__.get("_kernel_cache")
        if cache is None or cache[0] != key:
            arrays = (edges[1:-1].to(dtype).double().contiguous(), gammas.to(dtype).double().contiguous(),
                      bool(gammas.any()))
            cache = self._kernel_cache = (key, arrays, edges, gammas)
        return cache[1]

    @torch.no_grad()
    def end_epoch(self, val_logits, val_targets, epoch: int) -> None:
        logits, targets = flatten_rows(val_logits, val_targets, self.ignore_index)
        if targets.numel() == 0:
            return
        confidence, predicted = F.softmax(logits.double(), dim=1).max(dim=1)
        correct = (predicted == targets).double()
        edges = equal_mass_edges(confidence, self.num_bins)
        index = bin_index(confidence, edges)
        count = torch.bincount(index, minlength=self.num_bins).double()
        gap_sum = torch.bincount(index, weights=confidence - correct, minlength=self.num_bins)
        gaps = gap_sum / count.clamp_min(1.0)                   # an empty bin has gap 0
        self.gammas.copy_(next_gammas(self.gammas.double(), gaps, self.lam, self.switch,
                                      self.gamma_min, self.gamma_max))
        self.edges.copy_(edges)

    def stats(self) -> dict[str, float]:
        g = self.gammas.double()
        return {"gamma_min": float(g.min()), "gamma_mean": float(g.mean()), "gamma_max": float(g.max()),
                "inverse_bins": float((g < 0).sum())}
