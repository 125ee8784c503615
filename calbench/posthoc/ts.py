"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2):
softmax(z / T) with one T > 0 minimising the validation negative log-likelihood."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.registry import POSTHOC


def nll_and_grad_beta(beta: float, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean NLL of softmax(beta * logits) and its derivative in beta (beta = 1 / T)."""
    logp = log_softmax(beta * logits, axis=1)
    rows = np.arange(len(labels))
    nll = -logp[rows, labels].mean()
    grad = -(logits[rows, labels] - (np.exp(logp) * logits).sum(axis=1)).mean()
    return float(nll), float(grad)


@POSTHOC.register("ts", description="Temperature scaling: one T > 0 minimising validation NLL.",
                  paper="Guo et al., ICML 2017")
class TemperatureScaling(Calibrator):
    """logits / T with T = argmin validation NLL, optimised over u = log T in float64 (no cap on T).

    Why this parametrisation: the NLL is convex in 1/T, and L-BFGS on log T with the analytic
    gradient converges in a few iterations while keeping T > 0; dividing by T > 0 never changes the
    arg-max. An empty validation split leaves T = 1.
    """

    output = "logits"
    preserves_argmax = True

    def __init__(self) -> None:
        self.temperature = 1.0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        if logits.shape[0] == 0:
            return

        def objective(u):
            beta = float(np.exp(-u[0]))
            nll, dbeta = nll_and_grad_beta(beta, logits, labels)
            return nll, np.array([-beta * dbeta])

        result = minimize(objective, x0=np.zeros(1), jac=True, method="L-BFGS-B",
                          options={"maxiter": 200, "gtol": 1e-10, "ftol": 1e-15})
        u = float(result.x[0])
        self.temperature = float(np.exp(u)) if np.isfinite(u) else 1.0

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        return logits / self.temperature

    def params(self) -> dict:
        return {"temperature": self.temperature}

    def load_params(self, params: dict) -> None:
        self.temperature = float(params["temperature"])
