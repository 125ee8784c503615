"""Matrix scaling with ODIR, off-diagonal and intercept regularisation (Kull, Perello-Nieto, Kängsepp,
Silva Filho, Song & Flach, "Beyond temperature scaling: Obtaining well-calibrated multiclass
probabilities with Dirichlet calibration", NeurIPS 2019, Sec. 4):

    softmax(W z + b),  minimising  mean_n NLL + lambda' sum_{i != j} W_ij^2 + mu' sum_j b_j^2

on validation logits z (matrix scaling; Dirichlet calibration is the same map on log-probabilities).
ODIR leaves the diagonal free and shrinks the off-diagonal weights and the intercepts, so with a
large lambda the map tends to vector scaling with a penalised bias.

Convention. The paper writes the penalties normalised, lambda' = lambda / (K (K - 1)) and
mu' = mu / K. The authors' code does not: their Keras MS-ODIR of the experiments (dirichletcal/
experiments_dnn, `Dirichlet_NN` with `L2_offdiag`) adds lambda sum_{i != j} W_ij^2 + mu sum b^2 to the
mean cross-entropy, and `dirichletcal.calib.MultinomialRegression` normalises only with
`reg_norm=True` (default False). calbench follows the code: lambda' = `reg_lambda`, mu' = `reg_mu`, and
`reg_norm=True` gives the paper's normalised form.

Defaults lambda = 0.5, mu = 0.01. The paper selects both by 5-fold cross-validation on the validation
set, by log-loss, over 1e-5 ... 1e6 (from 1e-2 at 100 classes; the authors' `tune_cal_odir.py`). In
the authors' tunings of 23 CIFAR-10 / CIFAR-100 / SVHN networks (the notebook of their Supp. Table 21,
selections in their unnormalised units) lambda = 0.5 is both the median and the most frequent pick
(9 of 23, at 10 and at 100 classes alike; range 0.025 ... 5000) and mu = 0.01 the median and the most
frequent (9 of 23; the grid's lowest value at 100 classes). A fixed default keeps a refit at report
time deterministic and cheap; set `reg_lambda` / `reg_mu` to a cross-validated pair where it matters.
Why not the normalised form: the same picks would differ ~100-fold between 10 and 100 classes there,
and the former default, a normalised lambda = 0.01, put 1e-8 on each off-diagonal weight at
K = 1,000, which nearly interpolated 10,000 validation rows with 1e6 weights (training NLL ~2.5e-5).
On the 66 runs of the quickstart store (digits, K = 10, 360 validation rows) the mean test NLL is
0.243 with these defaults, 0.524 with the former one (worse than the uncalibrated 0.250; ts 0.234),
lower on 65 of the 66 runs.
dirichletcal also pins the last row of [W, b] to zero by default (`ref_row=True`), which changes what
the penalty shrinks; calbench fits the full K x (K + 1) matrix of the paper's formula.

Solver (why it is fast). Write W = diag(d) + O with O off-diagonal. For a fixed O the objective in
(d, b) is vector scaling's with the fixed scores S = z O^T added, solved by vs's Newton-CG
(`fit_diagonal_affine` with `offset=S`, O(N K) per step). The profile F(O) = min_{d,b} f(O, d, b) is
convex (a partial minimum of a convex function) and its gradient is the full gradient in O at the
inner minimum (envelope theorem): offdiag(R^T z) + 2 lambda' O with R = (softmax - onehot) / N. F is
minimised by L-BFGS (two-loop recursion, memory `LBFGS_MEMORY`, first step 1 / (2 lambda'), the
penalty's inverse curvature) with Armijo backtracking, from O = 0 and vs's (d, b). The badly
conditioned part (a class with few labels has a nearly flat bias) is thus solved by Newton and the
off-diagonal part is conditioned by the penalty: on `benchmarks/bench_posthoc.py`'s 10,000 x 1,000
logits max |dF/dO| goes 1.8e-3 -> 2.1e-5 -> 2.3e-7 in two steps, where scipy's L-BFGS-B on all
K (K + 1) weights at once was still at 6e-6 after 18 evaluations (and, at the former default, had not
converged after 220); weaker penalties take more steps (on correlated 5,000 x 200 logits: 7 at the
defaults, 20 at (lambda, mu) = (0.05, 0.001), 54 at (0.005, 1e-4)).
Each step costs two N x K x K products (z D^T for the direction D, whose multiples give every
backtracking trial's scores without another product, and R^T z at the accepted point), done in
float32 (sgemm is ~2x dgemm) for K >= `FLOAT32_FROM_CLASSES`: both multiply small quantities (D, R),
the scores, loss and parameters are float64, and a test checks the result against the float64 solve
(probabilities within 1e-6). Every N x K array is a buffer allocated once. The fit costs about one vs
fit plus 2 x steps + 1 products of 2 N K^2 flop: at 10,000 x 1,000 with 1 BLAS thread on the shared
2-core machine, 2.5 s in the best round (vs 1.0 s, ts 1.1 s in the same run; 4.6-7 s at load 4-5).

Convergence. Stops when the max |gradient| over all K (K + 1) parameters is <= `GRADIENT_TOLERANCE`
= 1e-6: dF/dO, and what remains of the inner gradient in (d, b), both checked from the accepted
point's residual. The inner solves aim at a tenth of it, vs's own 1e-7 (they start at 1e-5 and
tighten as F converges; when only the inner part is left above the bound it is re-solved to 1e-8,
counted as a step). F is 2 lambda'-strongly convex in O, so F is then within |dF/dO|^2 / (4 lambda')
of its minimum (Frobenius norm; 2.3e-10 on the benchmark logits). After `max_iter` L-BFGS steps it
warns (RuntimeWarning, one line) and keeps the last point. `odir_objective` is the plain float64
reference of the objective and gradient that the tests check every piece against.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_softmax

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, check_hparam
from calbench.posthoc.registry import POSTHOC
from calbench.posthoc.vs import CHUNK_ROWS, fit_diagonal_affine

GRADIENT_TOLERANCE = 1e-6  # max |gradient| over all K (K + 1) parameters at the returned point
LBFGS_MEMORY = 8
FLOAT32_FROM_CLASSES = 64  # below this the products are cheap: float64 throughout
ARMIJO = 1e-4
INITIAL_INNER_GTOL = 1e-5  # the inner solves start loose and tighten to GRADIENT_TOLERANCE / 10


def penalty_weights(k: int, reg_lambda: float, reg_mu: float, reg_norm: bool) -> tuple[float, float]:
    """(lambda', mu') of the objective: the hyper-parameters, or with `reg_norm` the paper's
    lambda / (K (K - 1)) and mu / K."""
    if not reg_norm:
        return reg_lambda, reg_mu
    return (reg_lambda / (k * (k - 1)) if k > 1 else 0.0), reg_mu / k


def odir_objective(theta: np.ndarray, logits: np.ndarray, labels: np.ndarray, off_weight: float,
                   bias_weight: float):
    """(loss, gradient) of mean NLL + off_weight sum_{i != j} W_ij^2 + bias_weight |b|^2 at
    theta = [W.ravel(), b]: the plain float64 reference."""
    n, k = logits.shape
    weight, bias = theta[: k * k].reshape(k, k), theta[k * k:]
    logp = log_softmax(logits @ weight.T + bias, axis=1)
    rows = np.arange(n)
    residual = np.exp(logp)
    residual[rows, labels] -= 1.0
    residual /= n
    off = weight - np.diag(np.diag(weight))
    loss = -logp[rows, labels].mean() + off_weight * (off * off).sum() + bias_weight * (bias * bias).sum()
    grad_w = residual.T @ logits + 2.0 * off_weight * off
    grad_b = residual.sum(axis=0) + 2.0 * bias_weight * bias
    return float(loss), np.concatenate([grad_w.ravel(), grad_b])


class ProfiledOdir:
    """The profile F(O) = min_{d,b} f(diag(d) + O, b) on fixed float64 logits: `point` solves the inner
    problem at scores S = z O^T and returns F; `gradient` is dF/dO there (and what remains of the inner
    gradient); `scores_of` is z D^T and
    `trial_scores` S + t z D^T. The N x K x K products run in `precision` (numpy's BLAS, the caller's
    thread setting). Every N x K array is a buffer allocated once (fresh 80 MB arrays per step cost
    ~1 s of allocation and page faults in a 10,000 x 1,000 fit at load 5): two score buffers, current
    and trial, alternate."""

    def __init__(self, logits, labels, off_weight: float, bias_weight: float, precision=np.float64) -> None:
        self.x = np.ascontiguousarray(logits, dtype=np.float64)
        self.precision = precision
        self.x_low = self.x if precision == np.float64 else self.x.astype(precision)
        self.low = None if precision == np.float64 else np.empty_like(self.x_low)  # R's copy; z D^T
        self.rows, self.labels = np.arange(self.x.shape[0]), np.asarray(labels, dtype=np.int64)
        self.off_weight, self.bias_weight = off_weight, bias_weight
        self.residual = np.empty_like(self.x)
        self.step_scores = self.low if self.low is not None else np.empty_like(self.x)  # z D^T
        self.score_buffers = (np.empty_like(self.x), np.empty_like(self.x))

    def point(self, off, scores, start, inner_gtol: float):
        """(F, d, b) at O = `off` with S = `scores` (None: zero), the inner (d, b) solved from
        `start`; leaves R = (softmax - onehot) / N of that point in `self.residual`."""
        d, b = fit_diagonal_affine(self.x, self.labels, bias_penalty=self.bias_weight, gtol=inner_gtol,
                                   offset=scores, start=start)
        nll = self.nll_and_residual(scores, d, b)
        return nll + self.bias_weight * float(b @ b) + self.off_weight * float(np.vdot(off, off)), d, b

    def nll_and_residual(self, scores, d, b) -> float:
        """Mean NLL of S + d * z + b, and its (softmax - onehot) / N into `self.residual`."""
        n = self.x.shape[0]
        z = np.multiply(self.x, d, out=self.residual)
        z += b
        if scores is not None:
            z += scores
        log_partition, true_sum = 0.0, float(z[self.rows, self.labels].sum())
        for start in range(0, n, CHUNK_ROWS):
            block = z[start:start + CHUNK_ROWS]
            top = block.max(axis=1, keepdims=True)
            np.exp(np.subtract(block, top, out=block), out=block)
            total = block.sum(axis=1, keepdims=True)
            log_partition += float(top.sum() + np.log(total).sum())
            block /= total * n
        z[self.rows, self.labels] -= 1.0 / n
        return (log_partition - true_sum) / n

    def gradient(self, point: dict) -> tuple[np.ndarray, float]:
        """(dF/dO, max |df/d(d, b)|) at `point` from its stored residual R: dF/dO = offdiag(R^T z) +
        2 lambda' O (diagonal left zero), and what remains of the inner problem's gradient,
        diag(R^T z) and R's column sums + 2 mu' b, in float64 (O(N K))."""
        inner_d = np.einsum("ij,ij->j", self.residual, self.x)
        inner_b = self.residual.sum(axis=0) + 2.0 * self.bias_weight * point["b"]
        inner = float(max(np.abs(inner_d).max(initial=0.0), np.abs(inner_b).max(initial=0.0)))
        residual = self.residual
        if self.low is not None:
            residual = self.low
            np.copyto(residual, self.residual, casting="same_kind")
        grad = np.matmul(residual.T, self.x_low).astype(np.float64, copy=False)
        np.fill_diagonal(grad, 0.0)
        grad += 2.0 * self.off_weight * point["off"]
        return grad, inner

    def scores_of(self, direction) -> None:
        """z D^T into `self.step_scores`, in `precision`."""
        np.matmul(self.x_low, np.ascontiguousarray(direction.T, dtype=self.precision), out=self.step_scores)

    def trial_scores(self, scores, step: float) -> np.ndarray:
        """S + step * z D^T (after `scores_of`; float64 sums) in the score buffer that is not `scores`."""
        out = self.score_buffers[1] if scores is self.score_buffers[0] else self.score_buffers[0]
        np.multiply(self.step_scores, step, out=out)
        if scores is not None:
            out += scores
        return out


def lbfgs_direction(grad: np.ndarray, history: list, first_scale: float) -> np.ndarray:
    """-H grad by L-BFGS's two-loop recursion (Nocedal & Wright, Numerical Optimization, Alg. 7.4)
    over `history` [(s, y, 1 / s.y), ...] oldest first; H0 = (s.y / y.y) I of the newest pair, or
    `first_scale` I without one. The diagonal stays zero (it is the inner problem's)."""
    q = grad.copy()
    alphas = []
    for s, y, rho in reversed(history):
        alphas.append(rho * float(np.vdot(s, q)))
        q -= alphas[-1] * y
    if history:
        s, y, _ = history[-1]
        first_scale = float(np.vdot(s, y) / np.vdot(y, y))
    q *= first_scale
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
        q += (alpha - rho * float(np.vdot(y, q))) * s
    q *= -1.0
    np.fill_diagonal(q, 0.0)
    return q


def solved_point(problem: ProfiledOdir, off, scores, start: dict | None, inner_gtol: float) -> dict:
    """The point dict {off, scores, d, b, value} of O = `off` (S = `scores`), its inner problem
    solved to `inner_gtol` from `start`'s (d, b) (None: from the identity)."""
    value, d, b = problem.point(off, scores, None if start is None else (start["d"], start["b"]), inner_gtol)
    return {"off": off, "scores": scores, "d": d, "b": b, "value": value}


def line_search(problem: ProfiledOdir, current: dict, direction, slope: float, inner_gtol: float):
    """The first of steps 1, 1/2, 1/4, ... meeting Armijo's condition on F, as a point dict, or None
    after 30 halvings (F cannot decrease along `direction` at float precision)."""
    problem.scores_of(direction)
    step = 1.0
    for _ in range(30):
        trial = solved_point(problem, current["off"] + step * direction,
                             problem.trial_scores(current["scores"], step), current, inner_gtol)
        if trial["value"] <= current["value"] + ARMIJO * step * slope:
            return trial
        step /= 2.0
    return None


def fit_odir(logits: np.ndarray, labels: np.ndarray, off_weight: float, bias_weight: float, max_iter: int,
             precision=None, gtol: float = GRADIENT_TOLERANCE) -> tuple[np.ndarray, np.ndarray, dict]:
    """(W, b, info) minimising the ODIR objective (module docstring) by L-BFGS on the profile F(O),
    from O = 0 and vs's (d, b). `precision` of the products: float32 from `FLOAT32_FROM_CLASSES`
    classes by default. info: steps, max_gradient (max |gradient| over all K (K + 1) parameters:
    dF/dO and the inner problem's rest), converged (max_gradient <= gtol)."""
    k = logits.shape[1]
    if precision is None:
        precision = np.float32 if k >= FLOAT32_FROM_CLASSES else np.float64
    problem = ProfiledOdir(logits, labels, off_weight, bias_weight, precision)
    current = solved_point(problem, np.zeros((k, k)), None, None, INITIAL_INNER_GTOL)
    (grad, inner), history, steps = problem.gradient(current), [], 0
    first_scale = 1.0 / (2.0 * off_weight) if off_weight > 0 else 1.0
    while steps < max_iter:
        largest = float(np.abs(grad).max(initial=0.0))
        if max(largest, inner) <= gtol:
            break
        if largest <= gtol:  # what remains is the inner problem's: solve it tighter (a step), re-check
            current = solved_point(problem, current["off"], current["scores"], current, gtol / 100.0)
            (grad, inner), steps = problem.gradient(current), steps + 1
            continue
        direction = lbfgs_direction(grad, history, first_scale)
        inner_gtol = max(gtol / 10.0, min(INITIAL_INNER_GTOL, largest / 1000.0))  # tightens as F converges
        trial = line_search(problem, current, direction, float(np.vdot(grad, direction)), inner_gtol)
        if trial is None:
            break
        new_grad, inner = problem.gradient(trial)
        s, y = trial["off"] - current["off"], new_grad - grad
        if (sy := float(np.vdot(s, y))) > 1e-16 * float(np.vdot(y, y)):
            history = (history + [(s, y, 1.0 / sy)])[-LBFGS_MEMORY:]
        current, grad, steps = trial, new_grad, steps + 1
    largest = max(float(np.abs(grad).max(initial=0.0)), inner)
    info = {"steps": steps, "max_gradient": largest, "converged": largest <= gtol}
    return current["off"] + np.diag(current["d"]), current["b"], info


@POSTHOC.register("ms-odir", description="Matrix scaling with off-diagonal and intercept regularisation.",
                  paper="Kull et al., NeurIPS 2019")
class MatrixScalingODIR(Calibrator):
    """W z + b on logits, fitted by `fit_odir` (at most `max_iter` L-BFGS steps, then a warning);
    outputs logits. A full matrix can reorder the classes, so the arg-max can move. An empty
    validation split leaves the identity."""

    version = 3  # 3: the authors' code's unnormalised penalties (reg_norm for the paper's), 0.5 / 0.01
    output = "logits"
    preserves_argmax = False

    def __init__(self, *, reg_lambda: float = 0.5, reg_mu: float = 0.01, reg_norm: bool = False,
                 max_iter: int = 100) -> None:
        check_hparam(reg_lambda >= 0.0, "ms-odir.reg_lambda", "a number >= 0", reg_lambda)
        check_hparam(reg_mu >= 0.0, "ms-odir.reg_mu", "a number >= 0", reg_mu)
        check_hparam(max_iter >= 1, "ms-odir.max_iter", "an integer >= 1", max_iter)
        self.reg_lambda, self.reg_mu, self.reg_norm, self.max_iter = reg_lambda, reg_mu, reg_norm, max_iter
        self.weight = np.zeros((0, 0))
        self.bias = np.zeros(0)
        self.fit_info: dict = {}

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        n, k = logits.shape
        if not n:
            self.weight, self.bias = np.eye(k), np.zeros(k)
            return
        off_weight, bias_weight = penalty_weights(k, self.reg_lambda, self.reg_mu, self.reg_norm)
        self.weight, self.bias, info = fit_odir(logits, labels, off_weight, bias_weight, self.max_iter)
        self.fit_info = info  # not part of the state: how the last fit ended (benchmarks print it)
        if not info["converged"]:
            warnings.warn(f"ms-odir: not converged after {info['steps']} steps (max |gradient| "
                          f"{info['max_gradient']:.1e} > {GRADIENT_TOLERANCE:.0e}); raise max_iter or the "
                          f"penalties", RuntimeWarning, stacklevel=2)

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(len(self.bias), logits, "ms-odir")
        return logits @ self.weight.T + self.bias

    def params(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    def load_params(self, params: dict) -> None:
        self.bias = np.asarray(params["bias"], dtype=np.float64)
        k = self.bias.size
        self.weight = np.asarray(params["weight"], dtype=np.float64).reshape(k, k)
