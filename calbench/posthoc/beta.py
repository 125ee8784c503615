"""Top-label beta calibration (Kull, Silva Filho & Flach, "Beta calibration: a well-founded and easily
implemented improvement on logistic calibration for binary classifiers", AISTATS 2017, Eq. 4-5).

The three-parameter beta map of the top confidence s,

    mu(s) = sigmoid(a ln s - b ln(1 - s) + c),   a, b >= 0,

is fitted to "the prediction is correct" by maximum likelihood (logistic regression on the features
ln s and -ln(1 - s)); a, b >= 0 is the paper's constraint that keeps the map monotone non-decreasing.
The paper's fitting recipe drops a feature whose coefficient comes out negative and refits; calbench
solves the same convex problem under the bounds directly (L-BFGS-B, analytic gradient, float64), as
netcal's `BetaCalibration` (method "mle") does. s is clipped to [eps, 1 - eps] with eps the float64
machine epsilon (netcal's clip). a = b = 1, c = 0 is the identity, which is where the fit starts.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, probabilities, top_label, with_top_confidence
from calbench.posthoc.registry import POSTHOC

EPS = float(np.finfo(np.float64).eps)


def beta_features(confidence: np.ndarray) -> np.ndarray:
    """(N, 3) features [ln s, -ln(1 - s), 1] of clipped confidences."""
    s = np.clip(confidence, EPS, 1.0 - EPS)
    return np.stack([np.log(s), -np.log1p(-s), np.ones_like(s)], axis=1)


def fit_beta_map(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(a, b, c) maximising the Bernoulli likelihood of `correct` under mu(s), with a, b >= 0."""
    features = beta_features(confidence)
    n = max(len(correct), 1)

    def objective(theta):
        logit = features @ theta
        value = (np.logaddexp(0.0, logit) - correct * logit).sum() / n
        return float(value), features.T @ (expit(logit) - correct) / n

    result = minimize(objective, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None), (0.0, None), (None, None)],
                      options={"maxiter": 1000, "gtol": 1e-12, "ftol": 1e-15})
    return result.x


@POSTHOC.register("beta", description="Top-label beta calibration (3 parameters, a, b >= 0).",
                  paper="Kull et al., AISTATS 2017")
class BetaCalibration(Calibrator):
    """Beta calibration of the top confidence; the other classes share the rest in proportion
    (`hb.with_top_confidence`), so the arg-max can move; outputs probabilities. An empty validation
    split leaves the identity map."""

    output = "probs"
    preserves_argmax = False

    def __init__(self) -> None:
        self.coefficients = np.array([1.0, 1.0, 0.0])
        self.classes = 0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.classes = logits.shape[1]
        if logits.shape[0]:
            self.coefficients = fit_beta_map(*top_label(probabilities(logits), labels))

    def calibrated_confidence(self, confidence: np.ndarray) -> np.ndarray:
        return expit(beta_features(confidence) @ self.coefficients)

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(self.classes, logits, "beta")
        probs = probabilities(logits)
        confidence, _ = top_label(probs)
        return with_top_confidence(probs, self.calibrated_confidence(confidence))

    def params(self) -> dict:
        a, b, c = (float(v) for v in self.coefficients)
        return {"classes": self.classes, "a": a, "b": b, "c": c}

    def load_params(self, params: dict) -> None:
        self.classes = int(params["classes"])
        self.coefficients = np.array([params["a"], params["b"], params["c"]], dtype=np.float64)
