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


BLOCK_ROWS = 256  # rows per block of the N x K passes: the block stays in cache, nothing N x K is allocated


def row_blocks(logits: np.ndarray, labels: np.ndarray):
    """(logits, labels) of consecutive blocks of BLOCK_ROWS rows."""
    for start in range(0, len(labels), BLOCK_ROWS):
        yield logits[start:start + BLOCK_ROWS], labels[start:start + BLOCK_ROWS]


def softmax_rows(scaled: np.ndarray) -> np.ndarray:
    """softmax of each row, in place (max subtracted first)."""
    np.exp(scaled - scaled.max(axis=1, keepdims=True), out=scaled)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


def mse_and_grad_beta(beta: float, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean over N x K entries of (softmax(beta z) - onehot)^2 and its derivative in beta, from
    d p_k / d beta = p_k (z_k - sum_j p_j z_j), accumulated over blocks of rows."""
    n, k = logits.shape
    squares = trues = grad = 0.0
    for z, y in row_blocks(logits, labels):
        p = softmax_rows(beta * z)
        rows = np.arange(len(y))
        mean_z = (p * z).sum(axis=1)
        p_true, squared = p[rows, y], p * p
        squares += float(squared.sum())
        trues += float(p_true.sum())
        grad += float((squared * z).sum() - squared.sum(axis=1) @ mean_z - p_true @ (z[rows, y] - mean_z))
    return (squares - 2.0 * trues + n) / (n * k), 2.0 * grad / (n * k)


def mse_gram(logits: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """3 x 3 Gram matrix, over N x K entries divided by N K, of the members' residuals
    (softmax(z / T), softmax(z), 1 / K) - onehot, accumulated over blocks of rows."""
    n, k = logits.shape
    gram = np.zeros((3, 3))
    for z, y in row_blocks(logits, labels):
        residuals = [softmax_rows(z / temperature), softmax_rows(z.copy()), np.full(z.shape, 1.0 / k)]
        rows = np.arange(len(y))
        for r in residuals:
            r[rows, y] -= 1.0
        gram += [[float(np.vdot(a, b)) for b in residuals] for a in residuals]
    return gram / (n * k)


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


def fit_weights(logits: np.ndarray, labels: np.ndarray, temperature: float, loss: str) -> np.ndarray:
    """Simplex weights of the members minimising the mixture's MSE (a quadratic form in w with
    `mse_gram`) or NLL (SLSQP from (1, 0, 0) as the authors, with analytic gradients)."""
    if loss == "mse":
        gram = mse_gram(logits, labels, temperature)

        def objective(w):
            return float(w @ gram @ w), 2.0 * gram @ w
    else:
        rows = np.arange(len(labels))
        true = np.stack([m[rows, labels] for m in members_of(logits, temperature)], axis=1)

        def objective(w):
            mixed = np.maximum(true @ w, 1e-300)
            return float(-np.log(mixed).mean()), -(true / mixed[:, None]).mean(axis=0)

    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    result = minimize(objective, np.array([1.0, 0.0, 0.0]), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * 3, constraints=[constraint], tol=1e-12, options={"maxiter": 500})
    weights = np.clip(result.x, 0.0, 1.0)
    return weights / weights.sum()


def members_of(logits: np.ndarray, temperature: float) -> list[np.ndarray]:
    """The three member probability matrices: softmax(z / T), softmax(z), uniform."""
    uniform = np.full(logits.shape, 1.0 / logits.shape[1])
    return [softmax(logits / temperature, axis=1), softmax(logits, axis=1), uniform]


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
        self.weights = fit_weights(logits, labels, self.temperature, self.loss)

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
