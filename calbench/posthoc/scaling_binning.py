"""Scaling-binning calibrator (Kumar, Liang & Ma, "Verified Uncertainty Calibration", NeurIPS 2019,
Sec. 4), the marginal (class-wise) variant of their `uncertainty-calibration` package's
`PlattBinnerMarginalCalibrator`.

The validation rows are split in two halves by a seeded permutation (`seed`). Per class k:
  1. scaling: Platt scaling g_k(p) = sigmoid(a_k logit(p) + b_k) fitted on the first half by maximum
     likelihood against 1[label = k] (logit of p clipped to [1e-12, 1 - 1e-12], as the package);
  2. binning: equal-mass bins of g_k on the second half (`hb`'s edges, which are the package's
     `get_equal_bins`), each bin's value the mean of g_k over its second-half points.
A test probability maps to the value of the bin its g_k falls in. The package fits both steps on the
same rows; the paper's algorithm uses separate rows for them, which is what calbench does. The K
marginal values are then divided by their row sum (the package leaves them unnormalised) so the
output is a probability vector; outputs probabilities. Platt is solved by a damped Newton method for
all classes at once (the package uses scikit-learn's LogisticRegression(C=1e10), i.e. unpenalised up
to its solver tolerance).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import (apply_bins, bin_values, check_classes, check_hparam, inner_edges, probabilities,
                                 renormalised)
from calbench.posthoc.registry import POSTHOC

CLIP = 1e-12


def logit_features(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, CLIP, 1.0 - CLIP)
    return np.log(p / (1.0 - p))


def platt_losses(x, targets, a, b):
    """Mean logistic loss per column of sigmoid(a x + b) against targets."""
    z = x * a + b
    return (np.logaddexp(0.0, z) - targets * z).mean(axis=0)


def fit_platt(x: np.ndarray, targets: np.ndarray, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (a, b) minimising the mean logistic loss, from a = 1, b = 0 (the identity; an empty
    sample keeps it): Newton steps on the 2 x 2 Hessians of all columns at once, each halved until its
    column's loss does not increase; a column stops when its gradient is below 1e-10 or its loss moves
    by less than 1e-13 (a class absent from the rows is separable: its intercept would fall forever)."""
    n, k = x.shape
    a, b = np.ones(k), np.zeros(k)
    active = np.arange(k) if n else np.arange(0)
    loss = platt_losses(x, targets, a, b) if n else np.zeros(k)
    for _ in range(iterations):
        if active.size == 0:
            break
        xa, ta = x[:, active], targets[:, active]
        da, db, small = newton_step(xa, ta, a[active], b[active])
        step = np.ones(active.size)
        trial = platt_losses(xa, ta, a[active] - da, b[active] - db)
        for _ in range(40):
            worse = np.flatnonzero(~(trial <= loss[active]))
            if worse.size == 0:
                break
            step[worse] /= 2.0  # only the columns whose loss rose are evaluated again
            cols = active[worse]
            trial[worse] = platt_losses(xa[:, worse], ta[:, worse], a[cols] - step[worse] * da[worse],
                                        b[cols] - step[worse] * db[worse])
        accepted = trial <= loss[active]
        gain = np.where(accepted, loss[active] - trial, 0.0)
        a[active] = np.where(accepted, a[active] - step * da, a[active])
        b[active] = np.where(accepted, b[active] - step * db, b[active])
        loss[active] = np.where(accepted, trial, loss[active])
        active = active[~(small | (gain < 1e-13))]
    return a, b


def newton_step(x: np.ndarray, targets: np.ndarray, a: np.ndarray, b: np.ndarray):
    """(step in a, step in b, gradient already below 1e-10) per column of the logistic loss."""
    s = expit(x * a + b)
    r, w = s - targets, s * (1.0 - s)
    ga, gb = (r * x).mean(0), r.mean(0)
    haa, hab, hbb = (w * x * x).mean(0) + 1e-12, (w * x).mean(0), w.mean(0) + 1e-12
    det = haa * hbb - hab * hab
    small = np.maximum(np.abs(ga), np.abs(gb)) < 1e-10
    return (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det, small


@POSTHOC.register("scaling-binning", description="Platt scaling then equal-mass binning, per class.",
                  paper="Kumar et al., NeurIPS 2019")
class ScalingBinning(Calibrator):
    """Marginal scaling-binning on softmax probabilities, rows renormalised (a row whose values are all
    zero keeps its softmax probabilities); per-class maps, so the arg-max can move."""

    output = "probs"
    preserves_argmax = False

    def __init__(self, *, bins: int = 10, seed: int = 0) -> None:
        check_hparam(bins >= 1, "scaling-binning.bins", "an integer >= 1", bins)
        check_hparam(seed >= 0, "scaling-binning.seed", "an integer >= 0", seed)
        self.bins, self.seed = bins, seed
        self.slopes = self.intercepts = np.zeros(0)
        self.edges: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(scaling rows, binning rows): the two halves of a seeded permutation of range(n)."""
        order = np.random.default_rng(self.seed).permutation(n)
        return np.sort(order[: n // 2]), np.sort(order[n // 2:])

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = probabilities(logits)
        n, k = probs.shape
        targets = np.zeros_like(probs)
        targets[np.arange(n), labels] = 1.0
        scale_rows, bin_rows = self.split(n)
        x = logit_features(probs)
        self.slopes, self.intercepts = fit_platt(x[scale_rows], targets[scale_rows])
        scaled = expit(x[bin_rows] * self.slopes + self.intercepts)
        self.edges = [inner_edges(scaled[:, c], self.bins, "equal-mass") for c in range(k)]
        self.values = [bin_values(scaled[:, c], scaled[:, c], e) for c, e in enumerate(self.edges)]

    def marginals(self, probs: np.ndarray) -> np.ndarray:
        """The unnormalised per-class calibrated values (the package's `calibrate` output)."""
        scaled = expit(logit_features(probs) * self.slopes + self.intercepts)
        out = np.empty_like(scaled)
        for c, (e, v) in enumerate(zip(self.edges, self.values)):
            out[:, c] = apply_bins(scaled[:, c], e, v)
        return out

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(len(self.slopes), logits, "scaling-binning")
        probs = probabilities(logits)
        return renormalised(self.marginals(probs), probs)

    def params(self) -> dict:
        return {"slopes": self.slopes.tolist(), "intercepts": self.intercepts.tolist(),
                "edges": [e.tolist() for e in self.edges], "values": [v.tolist() for v in self.values]}

    def load_params(self, params: dict) -> None:
        self.slopes = np.asarray(params["slopes"], dtype=np.float64)
        self.intercepts = np.asarray(params["intercepts"], dtype=np.float64)
        self.edges = [np.asarray(e, dtype=np.float64) for e in params["edges"]]
        self.values = [np.asarray(v, dtype=np.float64) for v in params["values"]]
