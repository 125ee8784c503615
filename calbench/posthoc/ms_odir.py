"""Matrix scaling with ODIR, off-diagonal and intercept regularisation (Kull, Perello-Nieto, Kängsepp,
Silva Filho, Song & Flach, "Beyond temperature scaling: Obtaining well-calibrated multiclass
probabilities with Dirichlet calibration", NeurIPS 2019, Sec. 4):

    softmax(W z + b),  minimising  mean NLL + lambda / (K (K - 1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2

on validation logits z (matrix scaling; Dirichlet calibration is the same map on log-probabilities).
ODIR leaves the diagonal free and shrinks the off-diagonal weights and the intercepts, so with large
lambda the map tends to vector scaling with a penalised bias.

Defaults: the paper chooses lambda and mu by 5-fold cross-validation over a grid (1e-5 ... 1e6 for
10 classes, from 1e-2 for 100), and the authors' `dirichletcal.calib.MultinomialRegression` defaults
to no regularisation (reg_lambda = 0, reg_mu = None), so neither gives one value. calbench fixes
lambda = mu = 0.01 (in the paper's normalised form above, inside both grids) so a refit at report time
is deterministic; set `reg_lambda` / `reg_mu` to a cross-validated pair where it matters.
dirichletcal also pins the last row of [W, b] to zero by default (`ref_row=True`), which changes what
the penalty shrinks; calbench fits the full K x (K + 1) matrix of the paper's formula.

The fit is L-BFGS in float64 with the analytic gradient, started from the best diagonal map (itself
fitted from the identity W = I, b = 0, at O(N K) per step). At K = 1,000 every full step costs two
N x K x K products, so the fit time is about (steps) x (two such products); `max_iter` bounds it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, check_hparam
from calbench.posthoc.registry import POSTHOC


def odir_objective(theta: np.ndarray, logits: np.ndarray, labels: np.ndarray, reg_lambda: float, reg_mu: float):
    """(loss, gradient) of the regularised NLL at theta = [W.ravel(), b]."""
    n, k = logits.shape
    weight, bias = theta[: k * k].reshape(k, k), theta[k * k:]
    logp = log_softmax(logits @ weight.T + bias, axis=1)
    rows = np.arange(n)
    residual = np.exp(logp)
    residual[rows, labels] -= 1.0
    residual /= n
    off = weight - np.diag(np.diag(weight))
    off_scale = reg_lambda / (k * (k - 1)) if k > 1 else 0.0
    loss = -logp[rows, labels].mean() + off_scale * (off * off).sum() + reg_mu / k * (bias * bias).sum()
    grad_w = residual.T @ logits + 2.0 * off_scale * off
    grad_b = residual.sum(axis=0) + 2.0 * reg_mu / k * bias
    return float(loss), np.concatenate([grad_w.ravel(), grad_b])


@POSTHOC.register("ms-odir", description="Matrix scaling with off-diagonal and intercept regularisation.",
                  paper="Kull et al., NeurIPS 2019")
class MatrixScalingODIR(Calibrator):
    """W z + b on logits, fitted by L-BFGS (`max_iter` iterations at most); outputs logits. A full
    matrix can reorder the classes, so the arg-max can move. An empty validation split leaves the
    identity."""

    output = "logits"
    preserves_argmax = False

    def __init__(self, *, reg_lambda: float = 0.01, reg_mu: float = 0.01, max_iter: int = 500) -> None:
        check_hparam(reg_lambda >= 0.0, "ms-odir.reg_lambda", "a number >= 0", reg_lambda)
        check_hparam(reg_mu >= 0.0, "ms-odir.reg_mu", "a number >= 0", reg_mu)
        check_hparam(max_iter >= 1, "ms-odir.max_iter", "an integer >= 1", max_iter)
        self.reg_lambda, self.reg_mu, self.max_iter = reg_lambda, reg_mu, max_iter
        self.weight = np.zeros((0, 0))
        self.bias = np.zeros(0)

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        n, k = logits.shape
        diagonal, bias = np.ones(k), np.zeros(k)
        if n:
            diagonal, bias = self.diagonal_start(logits, labels)
        theta = np.concatenate([np.diag(diagonal).ravel(), bias])
        if n:
            result = minimize(odir_objective, theta, args=(logits, labels, self.reg_lambda, self.reg_mu),
                              jac=True, method="L-BFGS-B",
                              options={"maxiter": self.max_iter, "gtol": 1e-10, "ftol": 1e-14})
            theta = result.x
        self.weight, self.bias = theta[: k * k].reshape(k, k), theta[k * k:]

    def diagonal_start(self, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The optimum of the same objective with W restricted to a diagonal (no off-diagonal penalty
        then), from the identity: O(N K) per step instead of O(N K^2), and the full fit starts there.
        Why: the penalty keeps the full optimum near-diagonal, so the expensive full steps are few.
        The objective is convex, so the start changes the optimum only within the tolerances."""
        n, k = logits.shape
        rows = np.arange(n)

        def objective(theta):
            d, b = theta[:k], theta[k:]
            logp = log_softmax(logits * d + b, axis=1)
            residual = np.exp(logp)
            residual[rows, labels] -= 1.0
            residual /= n
            value = -logp[rows, labels].mean() + self.reg_mu / k * (b * b).sum()
            grad_b = residual.sum(0) + 2.0 * self.reg_mu / k * b
            return float(value), np.concatenate([(residual * logits).sum(0), grad_b])

        result = minimize(objective, np.concatenate([np.ones(k), np.zeros(k)]), jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": 1e-10, "ftol": 1e-14})
        return result.x[:k], result.x[k:]

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(len(self.bias), logits, "ms-odir")
        return logits @ self.weight.T + self.bias

    def params(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    def load_params(self, params: dict) -> None:
        self.bias = np.asarray(params["bias"], dtype=np.float64)
        k = self.bias.size
        self.weight = np.asarray(params["weight"], dtype=np.float64).reshape(k, k)
