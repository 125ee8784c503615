"""Bayesian binning into quantiles, BBQ (Naeini, Cooper & Hauskrecht, "Obtaining Well Calibrated
Probabilities Using Bayesian Binning", AAAI 2015), on the top-label confidence.

Every binning model M_B splits the validation confidences into B equal-frequency bins (B from
max(1, floor(N^(1/3) / C)) to ceil(C * N^(1/3)), C = `range_factor` = 10, capped at N). A model's
score is its marginal likelihood under independent Beta priors per bin (Eq. 2-3):

    P(D | M) = prod_b  G(N'/B) / G(n_b + N'/B) * G(m_b + a_b) / G(a_b) * G(n_b - m_b + b_b) / G(b_b),
    a_b = (N'/B) p_b,  b_b = (N'/B)(1 - p_b),

with n_b points and m_b correct predictions in bin b, p_b the midpoint of the bin's confidence interval
and N' = `prior_strength` = 2 (the paper's equivalent sample size); models have a uniform prior. The
calibrated confidence is the posterior average over models of the bins' posterior means
(m_b + a_b) / (n_b + N'/B) (Eq. 1). Bin edges follow `hb` (half way between neighbouring sorted
scores, first bin from 0, last to 1); midpoints are clipped to [1e-12, 1 - 1e-12] so a degenerate bin
[1, 1] has a proper prior. Models whose posterior weight is below 1e-12 are dropped (and the weights
renormalised), which keeps the stored state small and changes the output by less than 1e-12 per model.

netcal's `BBQ` differs from the paper: it scores equal-width histograms by BIC/AIC with an "elbow"
cut and uses plain bin means, so the two agree only approximately (see the tests).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import (apply_bins, check_classes, check_hparam, inner_edges, probabilities, top_label,
                                 with_top_confidence)
from calbench.posthoc.registry import POSTHOC

MIN_WEIGHT = 1e-12


def bin_counts(scores: np.ndarray, correct: np.ndarray, edges: np.ndarray):
    """(n_b, m_b, p_b): points, correct points and clipped interval midpoint per bin."""
    index = np.searchsorted(edges, scores, side="left")
    count = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
    hits = np.bincount(index, weights=correct, minlength=edges.size + 1)
    bounds = np.concatenate([[0.0], edges, [1.0]])
    midpoint = np.clip((bounds[:-1] + bounds[1:]) / 2.0, 1e-12, 1.0 - 1e-12)
    return count, hits, midpoint


def binning_model(scores: np.ndarray, correct: np.ndarray, bins: int, prior_strength: float):
    """(log marginal likelihood, edges, posterior-mean value per bin) of the B-bin model."""
    edges = inner_edges(scores, bins, "equal-mass")
    count, hits, midpoint = bin_counts(scores, correct, edges)
    strength = prior_strength / (edges.size + 1)
    alpha, beta = strength * midpoint, strength * (1.0 - midpoint)
    log_ml = (gammaln(strength) - gammaln(count + strength) + gammaln(hits + alpha) - gammaln(alpha)
              + gammaln(count - hits + beta) - gammaln(beta)).sum()
    return float(log_ml), edges, (hits + alpha) / (count + strength)


def bin_range(n: int, range_factor: float) -> range:
    """The paper's range of bin counts for N points."""
    root = n ** (1.0 / 3.0)
    low = max(1, int(np.floor(root / range_factor)))
    return range(low, max(low, min(n, int(np.ceil(range_factor * root)))) + 1)


@POSTHOC.register("bbq", description="Bayesian binning into quantiles on the top-label confidence.",
                  paper="Naeini et al., AAAI 2015")
class BayesianBinningQuantiles(Calibrator):
    """BBQ of the top confidence; the other classes share the rest in proportion
    (`hb.with_top_confidence`), so the arg-max can move; outputs probabilities. An empty validation
    split leaves the confidences unchanged."""

    output = "probs"
    preserves_argmax = False

    def __init__(self, *, range_factor: float = 10.0, prior_strength: float = 2.0) -> None:
        check_hparam(range_factor >= 1.0, "bbq.range_factor", "a number >= 1", range_factor)
        check_hparam(prior_strength > 0.0, "bbq.prior_strength", "a number > 0", prior_strength)
        self.range_factor, self.prior_strength = range_factor, prior_strength
        self.models: list[tuple[float, np.ndarray, np.ndarray]] = []  # (weight, edges, values)
        self.classes = 0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.classes = logits.shape[1]
        self.models = []
        if logits.shape[0] == 0:
            return
        confidence, correct = top_label(probabilities(logits), labels)
        fitted = [binning_model(confidence, correct, b, self.prior_strength)
                  for b in bin_range(len(confidence), self.range_factor)]
        log_ml = np.array([m[0] for m in fitted])
        weights = np.exp(log_ml - log_ml.max())
        weights /= weights.sum()
        keep = weights >= MIN_WEIGHT
        total = weights[keep].sum()
        self.models = [(float(w / total), e, v) for w, (_, e, v), k in zip(weights, fitted, keep) if k]

    def calibrated_confidence(self, confidence: np.ndarray) -> np.ndarray:
        if not self.models:
            return confidence
        return sum(w * apply_bins(confidence, e, v) for w, e, v in self.models)

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(self.classes, logits, "bbq")
        probs = probabilities(logits)
        confidence, _ = top_label(probs)
        return with_top_confidence(probs, self.calibrated_confidence(confidence))

    def params(self) -> dict:
        return {"classes": self.classes, "weights": [w for w, _, _ in self.models],
                "edges": [e.tolist() for _, e, _ in self.models], "values": [v.tolist() for _, _, v in self.models]}

    def load_params(self, params: dict) -> None:
        self.classes = int(params["classes"])
        self.models = [(float(w), np.asarray(e, dtype=np.float64), np.asarray(v, dtype=np.float64))
                       for w, e, v in zip(params["weights"], params["edges"], params["values"])]
