"""Vector scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, Sec. 4.2):
softmax(w * z + b) with a per-class scale w and bias b, fitted on the validation set as the MAP
estimate under Gaussian priors centred on the identity:

    minimise  mean_i NLL(softmax(w * z_i + b), y_i) + (reg / N) (|w - 1|^2 + |b|^2)

i.e. the summed NLL plus reg (|w - 1|^2 + |b|^2): priors w_k ~ N(1, s^2), b_k ~ N(0, s^2) with
reg = 1 / (2 s^2). `reg` = 0 is the paper's unpenalised maximum-likelihood fit.

Why a penalty. The unpenalised MLE often does not exist on a small validation set: it exists iff
no direction (dw, db) raises every true-class score relative to every other class's (no complete or
quasi-complete separation; Albert & Anderson, Biometrika 1984, for logistic regression). The usual
case here is a class k whose own logit z_ik separates its rows from the others' at a threshold t:
then w_k -> infinity with b_k = -t w_k lowers the NLL forever. On the 66 runs of the quickstart
store (digits, K = 10, ~350 validation rows, 92-99% accuracy) an LP check finds such a direction on
56 runs (52 of them a single class separated by its own logit); the Newton fit then "converged"
(max |gradient| <= 1e-7, in 8-71 evaluations, never at the step cap: the gradient vanishes
exponentially along the direction) at |w| up to 17,000, and the mean test NLL after vs was 9.94
(180 on one run) against 0.250 uncalibrated. Even bench_posthoc.py's 10,000 x 1,000 logits (10 rows
a class) have 4 classes separated by their own logit (|w| 50 there).

Why this form and this default. A penalty on the summed NLL (the prior) weighs a class's parameters
against its own rows, so it fades as the validation set grows (the fit tends to the MLE where that
exists), whatever K; one on the mean NLL would shrink every fit by the same amount at any N and
weighs 1/K of the rows per class. Towards the identity: a strong penalty leaves the network's own
logits (w = 1, b = 0). Default reg = 0.5 (s = 1: a class's scale a priori within about 1 of 1, its
bias within about 1 of 0). Mean test NLL over the 66 quickstart runs: reg = 0 9.94, 0.05 0.233,
0.2 0.218, 0.5 0.213, 1 0.211, 2 0.211, 5 0.213 (ts 0.234, ms-odir 0.243, none 0.250); largest
|w| 2.7 at 0.5, a test NLL below the uncalibrated one on 52 runs (ts 49, reg = 0: 7). On
well-determined synthetic sets (bench_posthoc.py's logits, no separated class) reg = 0.5 changes
the test NLL by -4.8e-6 (10,000 x 10), -1.9e-4 (10,000 x 100), -6.4e-6 (50,000 x 100) and -1.7e-4
(100,000 x 1,000), relative; at 10,000 x 1,000, where the unpenalised fit diverges, by -6.7% (3.690 -> 3.444; uncalibrated 3.411, ts 3.298), and the fit takes 0.67 s
instead of 1.40 s (1 thread, best of 3, load 2; the penalty conditions the Hessian).
What the authors' codes do: Guo et al.'s released code (gpleiss/temperature_scaling) implements
temperature scaling only.
Kull et al.'s (NeurIPS 2019) DNN experiments fit vector scaling unpenalised, by Keras Adam
(lr 1e-3, batches of 128, at most 500 epochs, early stopping on the training loss), which bounds how
far w can move; their `dirichletcal` package's VectorScaling is `MultinomialRegression(method=
'Diag')` with reg_lambda = 0 by default (its Newton stops once the loss falls by < 1e-12 a step
over 4 steps, or after 1024), and with `reg_format='identity'` it adds reg_lambda |[W, b] - [I, 0]|^2 to the mean
log-loss: this penalty, on the mean. netcal's LogisticCalibration (vector scaling on K classes) is
unpenalised for 'mle' and uses priors N(1, 10^2) on w and N(0, 10^2) on b for its Bayesian fits
(reg = 0.005 here). With reg = 0 a class separated by its own logit (or absent from the validation
labels) is reported by a one-line RuntimeWarning (`separated_classes`; a sufficient check, O(N K),
not the LP).

The fit is a Newton method (the objective is convex in (w, b), strictly for reg > 0): each step
solves H d = -g by conjugate gradients preconditioned with the exact 2 x 2 (w_k, b_k) blocks of the Hessian H, using
exact Hessian-vector products (`DiagonalAffineProblem`), then backtracks until the Armijo condition
holds. Why: L-BFGS from the identity needed ~200 evaluations at 10,000 x 1,000 (each O(N K)); the
Hessian at the optimum is badly conditioned (a class with few labels has a nearly flat bias), which
Newton absorbs and L-BFGS does not, so the fit takes ~10-20 evaluations. Everything is float64
numpy, in cache-sized blocks of rows; the stopping rule is the max-abs gradient <= 1e-7, tighter
than the 1e-5 of the former L-BFGS-B fit.
`ms-odir` starts from the same solver with its bias penalty and no weight penalty (`fit_diagonal_affine`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_hparam
from calbench.posthoc.registry import POSTHOC

CHUNK_ROWS = 256  # rows per block: one block's buffers stay in cache
GRADIENT_TOLERANCE = 1e-7  # max |gradient| at the returned point (the former L-BFGS-B fit: 1e-5)
MAX_NEWTON_STEPS = 100
MAX_CG_STEPS = 50
DEFAULT_REG = 0.5  # prior standard deviation 1 on each w_k - 1 and b_k (module docstring)


class DiagonalAffineProblem:
    """mean_i NLL(softmax(w * z_i + b), y_i) + bias_penalty * |b|^2 + weight_penalty * |w - 1|^2 on
    fixed float64 logits z: value,
    gradient and the 2 x 2 (w_k, b_k) Hessian blocks at a point (`evaluate`), and the exact Hessian
    times a vector at the last evaluated point (`hessian_times`, from its stored probabilities).

    With p the softmax row, d/dz NLL = p - onehot and d2/dz2 = diag(p) - p p^T; dz_ik/dw_k = z_ik,
    dz_ik/db_k = 1, so the (w_k, b_k) block is mean_i (p_ik - p_ik^2) [[z^2, z], [z, 1]].
    numpy ufuncs on blocks of rows, in place: single-threaded SIMD exp, no thread pool (on a shared
    machine torch's OpenMP made the same fit 10x slower with 2 threads than with 1)."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, bias_penalty: float = 0.0,
                 offset: np.ndarray | None = None, weight_penalty: float = 0.0) -> None:
        self.x = np.ascontiguousarray(logits, dtype=np.float64)
        n, k = self.x.shape
        self.labels = np.asarray(labels, dtype=np.int64)
        self.true_logit = self.x[np.arange(n), self.labels]
        self.offset = offset  # (N, K) scores added to w * z + b (ms-odir's off-diagonal part), or None
        self.true_offset = 0.0 if offset is None else float(offset[np.arange(n), self.labels].sum())
        self.counts = np.bincount(self.labels, minlength=k).astype(np.float64)
        self.true_logit_sums = np.bincount(self.labels, weights=self.true_logit, minlength=k)
        self.bias_penalty = bias_penalty
        self.weight_penalty = weight_penalty  # on |w - 1|^2: shrinks the scales toward the identity
        self.probs = np.empty_like(self.x)
        self.scratch = np.empty((min(CHUNK_ROWS, n), k))

    def evaluate(self, w: np.ndarray, b: np.ndarray):
        """(value, (grad_w, grad_b), (h_ww, h_wb, h_bb)) at (w, b); keeps the probabilities."""
        n, k = self.x.shape
        sums = np.zeros((5, k))  # p, p z, q, q z, q z^2 with q = p - p^2
        log_partition = 0.0
        for start in range(0, n, CHUNK_ROWS):
            x, p = self.x[start:start + CHUNK_ROWS], self.probs[start:start + CHUNK_ROWS]
            q = self.scratch[: len(x)]
            np.add(np.multiply(x, w, out=p), b, out=p)
            if self.offset is not None:
                p += self.offset[start:start + CHUNK_ROWS]
            top = p.max(axis=1, keepdims=True)
            np.exp(np.subtract(p, top, out=p), out=p)
            total = p.sum(axis=1, keepdims=True)
            log_partition += float(top.sum() + np.log(total).sum())
            p /= total
            sums[0] += p.sum(axis=0)
            sums[1] += np.multiply(p, x, out=q).sum(axis=0)
            np.subtract(p, np.multiply(p, p, out=q), out=q)
            sums[2] += q.sum(axis=0)
            sums[3] += (q := np.multiply(q, x, out=q)).sum(axis=0)
            sums[4] += np.multiply(q, x, out=q).sum(axis=0)
        true = float((self.true_logit * w[self.labels] + b[self.labels]).sum()) + self.true_offset
        shift = w - 1.0
        penalty = self.bias_penalty * float(b @ b) + self.weight_penalty * float(shift @ shift)
        value = (log_partition - true) / n + penalty
        grad = ((sums[1] - self.true_logit_sums) / n + 2.0 * self.weight_penalty * shift,
                (sums[0] - self.counts) / n + 2.0 * self.bias_penalty * b)
        return value, grad, (sums[4] / n + 2.0 * self.weight_penalty, sums[3] / n,
                             sums[2] / n + 2.0 * self.bias_penalty)

    def hessian_times(self, vw: np.ndarray, vb: np.ndarray):
        """(H v)_w, (H v)_b at the last evaluated point: per row u = p * dz - p (p . dz), dz = v_w z + v_b."""
        n, k = self.x.shape
        out_w, out_b = np.zeros(k), np.zeros(k)
        for start in range(0, n, CHUNK_ROWS):
            x, p = self.x[start:start + CHUNK_ROWS], self.probs[start:start + CHUNK_ROWS]
            u = self.scratch[: len(x)]
            np.multiply(np.add(np.multiply(x, vw, out=u), vb, out=u), p, out=u)
            u -= p * u.sum(axis=1, keepdims=True)
            out_b += u.sum(axis=0)
            out_w += np.multiply(u, x, out=u).sum(axis=0)
        return out_w / n + 2.0 * self.weight_penalty * vw, out_b / n + 2.0 * self.bias_penalty * vb


def block_solve(blocks, rw, rb):
    """Solve the 2 x 2 systems [[h_ww, h_wb], [h_wb, h_bb]] (x_w, x_b) = (r_w, r_b) per class (a tiny
    ridge keeps a class whose probabilities vanish solvable; the blocks only precondition)."""
    hww, hwb, hbb = blocks
    ridge = 1e-12 * (1.0 + float(hww.mean() + hbb.mean()))
    a, d = hww + ridge, hbb + ridge
    det = a * d - hwb * hwb
    return (d * rw - hwb * rb) / det, (a * rb - hwb * rw) / det


def newton_direction(problem: DiagonalAffineProblem, grad, blocks):
    """d with H d ~ -g by preconditioned conjugate gradients, to relative residual min(0.1, sqrt|g|)
    (an inexact Newton step: loose far away, tight near the optimum, hence fast local convergence)."""
    rw, rb = -grad[0], -grad[1]
    dw, db = np.zeros_like(rw), np.zeros_like(rb)
    zw, zb = block_solve(blocks, rw, rb)
    pw, pb = zw.copy(), zb.copy()
    rz = float(rw @ zw + rb @ zb)
    target = min(0.1, rz ** 0.25) ** 2 * rz
    for _ in range(MAX_CG_STEPS):
        hw, hb = problem.hessian_times(pw, pb)
        curvature = float(pw @ hw + pb @ hb)
        if curvature <= 1e-300:
            break
        alpha = rz / curvature
        dw, db, rw, rb = dw + alpha * pw, db + alpha * pb, rw - alpha * hw, rb - alpha * hb
        zw, zb = block_solve(blocks, rw, rb)
        rz_next = float(rw @ zw + rb @ zb)
        if rz_next <= target:
            break
        pw, pb, rz = zw + (rz_next / rz) * pw, zb + (rz_next / rz) * pb, rz_next
    return (dw, db) if np.any(dw) or np.any(db) else (zw, zb)


def fit_diagonal_affine(logits: np.ndarray, labels: np.ndarray, bias_penalty: float = 0.0,
                        gtol: float = GRADIENT_TOLERANCE, max_steps: int = MAX_NEWTON_STEPS,
                        offset: np.ndarray | None = None, start: tuple | None = None,
                        weight_penalty: float = 0.0):
    """(w, b) minimising the `DiagonalAffineProblem` from `start` (default the identity, w = 1, b = 0):
    Newton-CG steps with Armijo backtracking until max |gradient| <= gtol, no step decreases the value,
    or `max_steps`. Without a bias penalty softmax ignores a shift of b, so b is returned centred."""
    problem = DiagonalAffineProblem(logits, labels, bias_penalty, offset, weight_penalty)
    k = problem.x.shape[1]
    w, b = (np.ones(k), np.zeros(k)) if start is None else (np.array(start[0], float), np.array(start[1], float))
    value, grad, blocks = problem.evaluate(w, b)
    for _ in range(max_steps):
        if max(np.abs(grad[0]).max(), np.abs(grad[1]).max()) <= gtol:
            break
        dw, db = newton_direction(problem, grad, blocks)
        slope, step = float(grad[0] @ dw + grad[1] @ db), 1.0
        while step > 1e-10:
            trial = problem.evaluate(w + step * dw, b + step * db)
            if trial[0] <= value + 1e-4 * step * slope:
                break
            step /= 2.0
        if step <= 1e-10 or not trial[0] < value:
            break
        w, b = w + step * dw, b + step * db
        value, grad, blocks = trial
    return w, (b - b.mean() if bias_penalty == 0.0 else b)


def separated_classes(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The classes k whose own logit z_ik separates their validation rows from the others' (every
    labelled row above every other row, or below), or that have no validation rows: for each, the
    unpenalised vector-scaling likelihood keeps rising along w_k (or b_k) -> +-infinity, so its
    maximum does not exist. Sufficient, not necessary (a direction may involve several classes)."""
    n, k = logits.shape
    rows, labels = np.arange(n), np.asarray(labels, dtype=np.int64)
    true = logits[rows, labels]
    own_min, own_max = np.full(k, np.inf), np.full(k, -np.inf)
    np.minimum.at(own_min, labels, true)
    np.maximum.at(own_max, labels, true)
    other_min, other_max = np.full(k, np.inf), np.full(k, -np.inf)
    for start in range(0, n, CHUNK_ROWS):
        block, block_rows = logits[start:start + CHUNK_ROWS].copy(), rows[: min(CHUNK_ROWS, n - start)]
        block_labels = labels[start:start + CHUNK_ROWS]
        block[block_rows, block_labels] = -np.inf
        np.maximum(other_max, block.max(axis=0), out=other_max)
        block[block_rows, block_labels] = np.inf
        np.minimum(other_min, block.min(axis=0), out=other_min)
    return np.flatnonzero((own_min > other_max) | (own_max < other_min))


@POSTHOC.register("vs", description="Vector scaling: per-class scale and bias minimising validation NLL, "
                  "with a ridge toward the identity (reg).",
                  paper="Guo et al., ICML 2017")
class VectorScaling(Calibrator):
    """w * logits + b with (K,) w and b minimising the validation NLL plus (reg / N)(|w - 1|^2 + |b|^2)
    (float64; reg = 0: the unpenalised fit, with a warning when `separated_classes` shows it does not
    exist), fitted from the identity (w = 1, b = 0) by `fit_diagonal_affine`.

    Unlike TS it can change the arg-max (so accuracy may move); it contains TS (w = 1/T, b = 0), so
    at reg = 0 its validation NLL is never worse. An empty validation split leaves the identity.
    """

    version = 3  # 3: ridge toward the identity, reg = 0.5 (2: unpenalised Newton-CG to 1e-7; 1: L-BFGS-B)
    output = "logits"
    preserves_argmax = False

    def __init__(self, *, reg: float = DEFAULT_REG) -> None:
        number = isinstance(reg, (int, float)) and not isinstance(reg, bool)
        check_hparam(number and math.isfinite(reg) and reg >= 0.0, "vs.reg", "a finite number >= 0", reg)
        self.reg = reg
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        n, k = logits.shape
        if n == 0:
            self.weight, self.bias = np.ones(k), np.zeros(k)
            return
        if self.reg == 0.0 and (separated := separated_classes(logits, labels)).size:
            listed = ", ".join(map(str, separated[:5])) + (", ..." if separated.size > 5 else "")
            warnings.warn(f"vs: {separated.size} class(es) ({listed}) separated by their own logit or absent on "
                          f"the validation set: the unpenalised fit does not exist (a scale or bias grows without "
                          f"bound); set vs:reg > 0", RuntimeWarning, stacklevel=2)
        penalty = self.reg / n
        self.weight, self.bias = fit_diagonal_affine(logits, labels, bias_penalty=penalty, weight_penalty=penalty)

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
