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
two N x K x K products (logits @ W^T, residual^T @ logits), done with torch on float64 with reused
buffers (`OdirProblem`; `odir_objective` is the plain numpy reference of the same value and
gradient). At K = 1,000 an evaluation is ~4e10 flop, so the fit time is about (evaluations) x 4e10 /
(GEMM flop/s): L-BFGS typically runs its `max_iter` steps there, far beyond a 5 s budget; smaller
`max_iter` bounds it.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, check_hparam
from calbench.posthoc.registry import POSTHOC
from calbench.posthoc.vs import fit_diagonal_affine


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
    """`odir_objective` on fixed float64 logits with torch: the N x K logit and residual buffers are
    allocated once, the two N x K x K products run in the caller's BLAS thread setting."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, reg_lambda: float, reg_mu: float) -> None:
        import torch

        self.torch = torch
        self.x = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float64))
        n, k = self.x.shape
        self.rows, self.labels = torch.arange(n), torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.off_scale = reg_lambda / (k * (k - 1)) if k > 1 else 0.0
        self.bias_scale = reg_mu / k
        self.scores = torch.empty_like(self.x)
        self.grad = torch.empty(k * k + k, dtype=torch.float64)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(loss, gradient) at theta = [W.ravel(), b], as `odir_objective`."""
        n, k = self.x.shape
        params = self.torch.from_numpy(theta)
        weight, bias = params[: k * k].view(k, k), params[k * k:]
        z = self.torch.addmm(bias, self.x, weight.T, out=self.scores)
        true_sum = float(z[self.rows, self.labels].sum())
        top = z.amax(1, keepdim=True)
        z.sub_(top).exp_()
        total = z.sum(1, keepdim=True)
        nll = (float(top.sum() + total.log().sum()) - true_sum) / n
        residual = z.div_(total)
        residual[self.rows, self.labels] -= 1.0
        residual /= n
        off = weight - self.torch.diag(self.torch.diagonal(weight))
        loss = nll + self.off_scale * float((off * off).sum()) + self.bias_scale * float(bias @ bias)
        grad_w = self.grad[: k * k].view(k, k)
        self.torch.mm(residual.T, self.x, out=grad_w)
        grad_w.add_(off, alpha=2.0 * self.off_scale)
        self.torch.add(residual.sum(0), bias, alpha=2.0 * self.bias_scale, out=self.grad[k * k:])
        return loss, self.grad.numpy().copy()


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
