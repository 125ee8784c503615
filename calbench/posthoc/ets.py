"""Ensemble temperature scaling, ETS (Zhang, Kailkhura & Han, "Mix-n-Match: Ensemble and Compositional
Methods for Uncertainty Calibration in Deep Learning", ICML 2020, Sec. 3.1, Eq. 8):

    p = w0 * softmax(z / T) + w1 * softmax(z) + w2 / K,   w on the simplex.

As in the authors' code (`ets_calibrate`), T is fitted first by minimising the validation mean squared
error of softmax(z / T) against the one-hot labels over T in [0.05, 5] (their bounds), then the weights
by minimising the validation MSE of the mixture, both with `loss="mse"` (the default); `loss="nll"`
uses the negative log-likelihood for both steps instead. The MSE of the mixture is a quadratic form
in w (a 3 x 3 Gram matrix), so the weight fit is exact and cheap at any N x K.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, check_hparam
from calbench.posthoc.registry import POSTHOC
from calbench.posthoc.ts import nll_and_grad_beta

LOSSES = ("mse", "nll")
T_BOUNDS = (0.05, 5.0)  # the authors' search interval for T


def mse_and_grad_beta(beta: float, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean over N x K entries of (softmax(beta z) - onehot)^2 and its derivative in beta, from
    d p_k / d beta = p_k (z_k - sum_j p_j z_j)."""
    n, k = logits.shape
    rows = np.arange(n)
    p = softmax(beta * logits, axis=1)
    centred = logits - (p * logits).sum(axis=1, keepdims=True)
    p_true = p[rows, labels]
    value = ((p * p).sum() - 2.0 * p_true.sum() + n) / (n * k)
    grad = (2.0 * (p * p * centred).sum() - 2.0 * (p_true * centred[rows, labels]).sum()) / (n * k)
    return float(value), float(grad)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, loss: str) -> float:
    """argmin over T in T_BOUNDS of the loss of softmax(z / T), by L-BFGS-B on log T from T = 1."""
    value_and_grad = mse_and_grad_beta if loss == "mse" else nll_and_grad_beta

    def objective(u):
        beta = float(np.exp(-u[0]))
        value, dbeta = value_and_grad(beta, logits, labels)
        return value, np.array([-beta * dbeta])

    bounds = [(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]))]
    result = minimize(objective, x0=np.zeros(1), jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 200, "gtol": 1e-12, "ftol": 1e-15})
    return float(np.exp(result.x[0]))


def fit_weights(members: list[np.ndarray], labels: np.ndarray, loss: str) -> np.ndarray:
    """Simplex weights of the member probability matrices minimising the mixture's MSE or NLL
    (SLSQP from (1, 0, 0) as the authors, with analytic gradients)."""
    n, k = members[0].shape
    rows = np.arange(n)
    if loss == "mse":
        residuals = [m.copy() for m in members]
        for r in residuals:
            r[rows, labels] -= 1.0
        gram = np.array([[float((a * b).sum()) for b in residuals] for a in residuals]) / (n * k)

        def objective(w):
            return float(w @ gram @ w), 2.0 * gram @ w
    else:
        true = np.stack([m[rows, labels] for m in members], axis=1)

        def objective(w):
            mixed = np.maximum(true @ w, 1e-300)
            return float(-np.log(mixed).mean()), -(true / mixed[:, None]).mean(axis=0)

    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    result = minimize(objective, np.array([1.0, 0.0, 0.0]), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * 3, constraints=[constraint], tol=1e-12, options={"maxiter": 500})
    weights = np.clip(result.x, 0.0, 1.0)
    return weights / weights.sum()


@POSTHOC.register("ets", description="Ensemble temperature scaling: TS, uncalibrated and uniform mixed.",
                  paper="Zhang et al., ICML 2020")
class EnsembleTemperatureScaling(Calibrator):
    """w0 softmax(z/T) + w1 softmax(z) + w2/K; outputs probabilities.

    Each member keeps the order of a row's logits (T > 0) and the uniform member adds a constant, so a
    non-negative mixture keeps the arg-max. An empty validation split leaves T = 1, w = (1, 0, 0).
    """

    output = "probs"
    preserves_argmax = True

    def __init__(self, *, loss: str = "mse") -> None:
        check_hparam(loss in LOSSES, "ets.loss", " or ".join(LOSSES), loss)
        self.loss = loss
        self.temperature = 1.0
        self.weights = np.array([1.0, 0.0, 0.0])
        self.classes = 0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self.classes = logits.shape[1]
        if logits.shape[0] == 0:
            return
        self.temperature = fit_temperature(logits, labels, self.loss)
        self.weights = fit_weights(self.members(logits), labels, self.loss)

    def members(self, logits: np.ndarray) -> list[np.ndarray]:
        uniform = np.full(logits.shape, 1.0 / logits.shape[1])
        return [softmax(logits / self.temperature, axis=1), softmax(logits, axis=1), uniform]

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(self.classes, logits, "ets")
        w0, w1, w2 = self.weights
        return (w0 * softmax(logits / self.temperature, axis=1) + w1 * softmax(logits, axis=1)
                + w2 / logits.shape[1])

    def params(self) -> dict:
        return {"classes": self.classes, "temperature": self.temperature, "weights": self.weights.tolist()}

    def load_params(self, params: dict) -> None:
        self.classes = int(params["classes"])
        self.temperature = float(params["temperature"])
        self.weights = np.asarray(params["weights"], dtype=np.float64)
