"""One-pass C kernels (value and analytic gradient) for the softmax losses of mixup, regmixup,
adafocal, dual-focal, acls, mdca, dca, rankmixup and rankmixup-mrl on the CPU (row_losses.c, its row
prologue softmax_rows.h; built on first use by calbench.native).

Why: at B = 128, K = 200 cross-entropy forward + backward takes ~45 us on one CPU thread, about as
long as a handful of PyTorch ops' own overhead, so a loss written as ten vectorised ops costs 3-6x
cross-entropy however little arithmetic it does. The kernel computes each row's softmax once
(log p in double), the loss and the gradient in the same call, batch-level terms (MDCA's class
means, DCA's mean confidence and accuracy, RankMixup's per-sample rankings) in a second pass over
the rows; backward only scales the saved gradient (first-order only, like margin_penalty.py).
Each function here returns None when the kernel does not apply (CUDA, a dtype other than
float32/float64, no C compiler, CALBENCH_NATIVE=0); the caller then runs its PyTorch expression,
which the tests compare the kernel against. Formulas of each kind: the header of row_losses.c.
"""

from __future__ import annotations

import ctypes
import functools
from types import SimpleNamespace

import torch

from calbench import native

SOFT_CE, FOCAL, DUAL_FOCAL, ACLS = 0, 1, 2, 3      # calbench_row_losses
MDCA, DCA = 4, 5                                   # calbench_batch_penalty
NDCG, MRL = 6, 7                                   # calbench_rank_mixup
_NO_ARRAY = torch.zeros(1, dtype=torch.float64)
_P, _I, _D, _K = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
_SIGNATURES = {
    "row_losses": [_P, _P, _P, _I, _I, _K, _P, _P, _P, _P, _P],
    "batch_penalty": [_P, _P, _I, _I, _K, _D, _D, _D, _P, _P],
    "rank_mixup": [_P, _P, _P, _P, _I, _I, _I, _K, _D, _D, _P, _P],
}


@functools.cache
def _kernels() -> dict:
    """{dtype: namespace of the C functions} for float32 and float64, or {} when they cannot be built."""
    lib = native.load("row_losses", package="methods")
    if lib is None:
        return {}
    kernels = {}
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        functions = {}
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, f"calbench_{name}_{suffix}")
            fn.restype, fn.argtypes = ctypes.c_int, argtypes
            functions[name] = fn
        kernels[dtype] = SimpleNamespace(**functions)
    return kernels


def kernel_for(logits: torch.Tensor, rows: int | None = None):
    """The C functions for these logits, or None (see the module docstring). With `rows` (the
    targets' count), None also when the logits do not have that many rows: the PyTorch path then
    raises its own error, where the kernel would read past the targets."""
    if logits.device.type != "cpu" or logits.dim() != 2 or (rows is not None and logits.shape[0] != rows):
        return None
    return _kernels().get(logits.dtype)


class _NativeLoss(torch.autograd.Function):
    """`call(x_ptr, grad_ptr, loss_ptr)` runs a kernel that writes the loss and its gradient."""

    @staticmethod
    def forward(ctx, logits, call):
        x = logits.contiguous()
        grad = torch.empty_like(x)
        loss = torch.empty((), dtype=x.dtype)
        status = call(x.data_ptr(), grad.data_ptr(), loss.data_ptr())
        if status == 1:
            raise IndexError("Target is out of bounds.")
        if status:
            raise MemoryError("row_losses kernel: out of memory")
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        if float(grad_out) == 1.0:      # loss.backward(): the saved gradient as is
            return grad, None
        return grad * grad_out, None


def _index(values: torch.Tensor) -> torch.Tensor:
    return values if values.dtype == torch.int64 and values.is_contiguous() else values.to(torch.int64).contiguous()


def _rows(logits, targets, kind, params, partners=None, edges=_NO_ARRAY, gammas=_NO_ARRAY):
    kernel = kernel_for(logits, targets.shape[0])
    if kernel is None or (partners is not None and partners.shape[0] != logits.shape[0] - int(params[0])):
        return None
    t = _index(targets)
    z = t if partners is None else _index(partners)
    p = (ctypes.c_double * len(params))(*params)
    n, k = logits.shape
    fn, e, g = kernel.row_losses, edges.data_ptr(), gammas.data_ptr()

    def call(x, grad, loss):
        return fn(x, t.data_ptr(), z.data_ptr(), n, k, kind, p, e, g, grad, loss)
    return _NativeLoss.apply(logits, call)


def two_target_ce(logits, targets, partners, split: int, w_first: float, w_rest: float, lam: float):
    """sum over rows < split of -w_first log p_y, plus over the rest of
    -w_rest (lam log p_y + (1 - lam) log p_z), z = partners[i - split]; or None."""
    return _rows(logits, targets, SOFT_CE, [float(split), w_first, w_rest, lam], partners=partners)


def binned_focal(logits, targets, inner_edges: torch.Tensor, gammas: torch.Tensor):
    """AdaFocal's mean over rows (gamma per bin of p_y; inverse focal for negative gammas); or None.
    `inner_edges` / `gammas` already rounded to the logits' dtype, as the PyTorch path uses them."""
    edges = inner_edges.double().contiguous()
    g = gammas.double().contiguous()
    return _rows(logits, targets, FOCAL, [1.0 / logits.shape[0], float(g.numel())], edges=edges, gammas=g)


def dual_focal(logits, targets, gamma: float):
    """mean_i -(1 - p_y + p_j)^gamma log p_y (dual focal); or None."""
    return _rows(logits, targets, DUAL_FOCAL, [1.0 / logits.shape[0], gamma])


def ce_plus_acls(logits, targets, margin: float, neg_c: float, pos_c: float):
    """CE + neg_c sum relu(max - margin - l)^2 + pos_c sum_i ties_i relu(max_i - margin)^2; or None."""
    return _rows(logits, targets, ACLS, [1.0 / logits.shape[0], margin, neg_c, pos_c])


def _batch(logits, targets, kind, beta: float, alpha: float, gamma: float):
    kernel = kernel_for(logits, targets.shape[0])
    if kernel is None:
        return None
    t = _index(targets)
    n, k = logits.shape
    fn = kernel.batch_penalty

    def call(x, grad, loss):
        return fn(x, t.data_ptr(), n, k, kind, beta, alpha, gamma, grad, loss)
    return _NativeLoss.apply(logits, call)


def mdca(logits, targets, beta: float, alpha: float = 0.0, gamma: float = 0.0):
    """mean_i B_i + beta (1/K) sum_k |mean_i p_ik - freq_k|, B_i cross-entropy, label smoothing
    (1 - alpha) CE_i + alpha mean_k(-log p_ik) for alpha > 0, or focal loss
    -max(1 - p_y, 1e-6)^gamma log p_y for gamma > 0 (MDCA on "ce", "ls", "fl"); or None."""
    return _batch(logits, targets, MDCA, float(beta), float(alpha), float(gamma))


def dca(logits, targets, beta: float):
    """CE + beta |mean_i max_k p_ik - accuracy|; or None."""
    return _batch(logits, targets, DCA, float(beta), 0.0, 0.0)


def rank_mixup(logits, targets, ctx: dict, kind: int, weight: float, margin: float = 0.0):
    """CE on the n clean rows + weight x M-NDCG (kind NDCG) or MRL (kind MRL) ranking term over
    [clean; copy 1; ...; copy M] rows, from ctx's lam (M,) and perm (M, n); or None."""
    kernel = kernel_for(logits, targets.shape[0])
    perm, lam = ctx["perm"], ctx["lam"]
    if kernel is None or perm.device.type != "cpu" or perm.dim() != 2 or lam.numel() != perm.shape[0] \
            or logits.shape[0] != perm.numel() + perm.shape[1]:
        return None
    t, pi = _index(targets), _index(perm)
    lam = lam.to(torch.float64).contiguous()
    copies, n = pi.shape
    k = logits.shape[1]
    fn = kernel.rank_mixup

    def call(x, grad, loss):
        return fn(x, t.data_ptr(), pi.data_ptr(), lam.data_ptr(), n, copies, k, kind, weight, margin, grad, loss)
    return _NativeLoss.apply(logits, call)
