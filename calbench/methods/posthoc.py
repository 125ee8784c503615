"""Post-hoc calibrators fitted on the validation split: temperature scaling and vector scaling."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.methods.registry import POSTHOC


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def _like(result: np.ndarray, template):
    if isinstance(template, torch.Tensor):
        return torch.as_tensor(result, dtype=template.dtype if template.is_floating_point() else torch.float32,
                               device=template.device)
    return result.astype(np.float32) if np.asarray(template).dtype == np.float32 else result


def _nll_and_grad_beta(beta: float, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """NLL of softmax(beta * logits) and its derivative in beta (beta = 1 / T)."""
    scaled = beta * logits
    logp = log_softmax(scaled, axis=1)
    p = np.exp(logp)
    rows = np.arange(len(labels))
    nll = -logp[rows, labels].mean()
    grad = -(logits[rows, labels] - (p * logits).sum(axis=1)).mean()
    return float(nll), float(grad)


@POSTHOC.register("ts", description="Temperature scaling: one T > 0 minimising validation NLL.",
                  paper="Guo et al., ICML 2017")
class TemperatureScaling:
    """logits / T with T = argmin validation NLL, optimised over log T in float64 (no cap on T).

    NLL is convex in 1/T; L-BFGS on u = log T with the analytic gradient converges in a few
    iterations. Dividing by T > 0 never changes the arg-max.
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def fit(self, val_logits, val_labels) -> "TemperatureScaling":
        logits = _as_numpy(val_logits)
        labels = _as_numpy(val_labels).astype(np.int64)
        if logits.shape[0] == 0:
            return self

        def objective(u):
            beta = float(np.exp(-u[0]))
            nll, dbeta = _nll_and_grad_beta(beta, logits, labels)
            return nll, np.array([-beta * dbeta])

        result = minimize(objective, x0=np.zeros(1), jac=True, method="L-BFGS-B",
                          options={"maxiter": 200, "gtol": 1e-10, "ftol": 1e-15})
        u = float(result.x[0])
        if not np.isfinite(u):
            u = 0.0
        self.temperature = float(np.exp(u))
        return self

    def transform(self, logits):
        if isinstance(logits, torch.Tensor):
            return logits / self.temperature
        return np.asarray(logits) / self.temperature

    def state(self) -> dict:
        return {"temperature": self.temperature}


@POSTHOC.register("vs", description="Vector scaling: per-class scale and bias minimising validation NLL.",
                  paper="Guo et al., ICML 2017")
class VectorScaling:
    """softmax(w * logits + b) with (K,) w and b fitted by L-BFGS on validation NLL (float64).

    Unlike TS it can change the arg-max; it is an extra, not part of the papers' tables.
    """

    def __init__(self):
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def fit(self, val_logits, val_labels) -> "VectorScaling":
        logits = _as_numpy(val_logits)
        labels = _as_numpy(val_labels).astype(np.int64)
        n, k = logits.shape
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0

        def objective(theta):
            w, b = theta[:k], theta[k:]
            logp = log_softmax(logits * w + b, axis=1)
            diff = (np.exp(logp) - onehot) / n
            return float(-(logp * onehot).sum() / n), np.concatenate([(diff * logits).sum(0), diff.sum(0)])

        theta0 = np.concatenate([np.ones(k), np.zeros(k)])
        result = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        self.weight, self.bias = result.x[:k], result.x[k:]
        return self

    def transform(self, logits):
        out = _as_numpy(logits) * self.weight + self.bias
        return _like(out, logits)

    def state(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}
