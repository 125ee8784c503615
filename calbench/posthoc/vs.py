"""Vector scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2):
softmax(w * z + b) with a per-class scale w and bias b minimising the validation NLL."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.registry import POSTHOC


@POSTHOC.register("vs", description="Vector scaling: per-class scale and bias minimising validation NLL.",
                  paper="Guo et al., ICML 2017")
class VectorScaling(Calibrator):
    """w * logits + b with (K,) w and b fitted by L-BFGS on the validation NLL (float64), from the
    identity (w = 1, b = 0) with the analytic gradient.

    Unlike TS it can change the arg-max (so accuracy may move); it contains TS (w = 1/T, b = 0), so
    its validation NLL is never worse. An empty validation split leaves the identity.
    """

    output = "logits"
    preserves_argmax = False

    def __init__(self) -> None:
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        n, k = logits.shape
        theta0 = np.concatenate([np.ones(k), np.zeros(k)])
        if n == 0:
            self.weight, self.bias = theta0[:k], theta0[k:]
            return
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0

        def objective(theta):
            w, b = theta[:k], theta[k:]
            logp = log_softmax(logits * w + b, axis=1)
            diff = (np.exp(logp) - onehot) / n
            return float(-(logp * onehot).sum() / n), np.concatenate([(diff * logits).sum(0), diff.sum(0)])

        result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        self.weight, self.bias = result.x[:k], result.x[k:]

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[-1] != self.weight.shape[0]:
            from calbench.errors import InputError
            raise InputError(f"vs: fitted on {self.weight.shape[0]} classes, got logits with {logits.shape[-1]}")
        return logits * self.weight + self.bias

    def params(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    def load_params(self, params: dict) -> None:
        self.weight = np.asarray(params["weight"], dtype=np.float64)
        self.bias = np.asarray(params["bias"], dtype=np.float64)
