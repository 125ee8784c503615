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

The fit is L-BFGS in float64 with the analytic gradient (`maxiter` = `max_iter`, gtol 1e-10, ftol
1e-14), started from the best diagonal map, i.e. the same objective with W diagonal (vs's Newton fit,
`fit_diagonal_affine`, with the bias penalty, to max |gradient| <= 1e-10). Each full evaluation is
two N x K x K products (logits @ W^T, residual^T @ logits), float64 with a reused buffer
(`OdirProblem`; `odir_objective` is the plain reference of the same value and gradient). At
K = 1,000 an evaluation is ~4e10 flop, so the fit time is about (evaluations) x 4e10 / (GEMM flop/s): on 10,000 x 1,000 synthetic logits it had not met gtol after 220 evaluations (max
|gradient| ~5e-9; the NLL falls to ~2.5e-5 as a full matrix nearly interpolates 10,000 rows), so
it runs towards `max_iter`, far beyond a 5 s budget; a smaller `max_iter` bounds it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, check_hparam
from calbench.posthoc.registry import POSTHOC
from calbench.posthoc.vs import CHUNK_ROWS, fit_diagonal_affine


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


class OdirProblem:
    """`odir_objective` on fixed float64 logits with the N x K score buffer allocated once: the two
    N x K x K products go to numpy's BLAS (the caller's thread setting), the softmax runs in place on
    cache-sized blocks of rows (single-threaded numpy SIMD exp)."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, reg_lambda: float, reg_mu: float) -> None:
        self.x = np.ascontiguousarray(logits, dtype=np.float64)
        n, k = self.x.shape
        self.rows, self.labels = np.arange(n), np.asarray(labels, dtype=np.int64)
        self.off_scale = reg_lambda / (k * (k - 1)) if k > 1 else 0.0
        self.bias_scale = reg_mu / k
        self.scores = np.empty_like(self.x)

    def residual(self, weight: np.ndarray, bias: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean NLL, (softmax - onehot) / N) of the scores x W^T + b, in the score buffer."""
        n = self.x.shape[0]
        z = np.matmul(self.x, weight.T, out=self.scores)
        z += bias
        log_partition, true_sum = 0.0, float(z[self.rows, self.labels].sum())
        for start in range(0, n, CHUNK_ROWS):
            block = z[start:start + CHUNK_ROWS]
            top = block.max(axis=1, keepdims=True)
            np.exp(np.subtract(block, top, out=block), out=block)
            total = block.sum(axis=1, keepdims=True)
            log_partition += float(top.sum() + np.log(total).sum())
            block /= total * n
        z[self.rows, self.labels] -= 1.0 / n
        return (log_partition - true_sum) / n, z

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, gradient) at theta = [W.ravel(), b], as `odir_objective`."""
        k = self.x.shape[1]
        weight, bias = theta[: k * k].reshape(k, k), theta[k * k:]
        nll, residual = self.residual(weight, bias)
        off = weight.copy()
        np.fill_diagonal(off, 0.0)
        loss = nll + self.off_scale * float((off * off).sum()) + self.bias_scale * float(bias @ bias)
        grad = np.empty(k * k + k)
        grad_w = np.matmul(residual.T, self.x, out=grad[: k * k].reshape(k, k))
        grad_w += 2.0 * self.off_scale * off
        grad[k * k:] = residual.sum(axis=0) + 2.0 * self.bias_scale * bias
        return loss, grad


@POSTHOC.register("ms-odir", description="Matrix scaling with off-diagonal and intercept regularisation.",
                  paper="Kull et al., NeurIPS 2019")
class MatrixScalingODIR(Calibrator):
    """W z + b on logits, fitted by L-BFGS (`max_iter` iterations at most); outputs logits. A full
    matrix can reorder the classes, so the arg-max can move. An empty validation split leaves the
    identity."""

    version = 2  # 2: the diagonal start by vs's Newton fit (1: L-BFGS-B); the optimum is the same
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
            result = minimize(OdirProblem(logits, labels, self.reg_lambda, self.reg_mu), theta, jac=True,
                              method="L-BFGS-B", options={"maxiter": self.max_iter, "gtol": 1e-10, "ftol": 1e-14})
            theta = result.x
        self.weight, self.bias = theta[: k * k].reshape(k, k), theta[k * k:]

    def diagonal_start(self, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The optimum of the same objective with W restricted to a diagonal (no off-diagonal penalty
        then): vs's Newton fit with the bias penalty, O(N K) per step instead of O(N K^2), and the
        full fit starts there. Why: the penalty keeps the full optimum near-diagonal, so the expensive
        full steps are fewer. The objective is convex, so the start changes the optimum only within
        the tolerances."""
        return fit_diagonal_affine(logits, labels, bias_penalty=self.reg_mu / logits.shape[1], gtol=1e-10,
                                   max_steps=self.max_iter)

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(len(self.bias), logits, "ms-odir")
        return logits @ self.weight.T + self.bias

    def params(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    def load_params(self, params: dict) -> None:
        self.bias = np.asarray(params["bias"], dtype=np.float64)
        k = self.bias.size
        self.weight = np.asarray(params["weight"], dtype=np.float64).reshape(k, k)
