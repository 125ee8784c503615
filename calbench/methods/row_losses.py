"""One-pass C kernels (value and analytic gradient) for the softmax losses of mixup, regmixup,
adafocal, dual-focal and acls on the CPU (row_losses.c; built on first use by calbench.methods.native).

Why: at B = 128, K = 200 cross-entropy forward + backward takes ~50 us on one CPU thread, about as
long as a handful of PyTorch ops' own overhead, so a loss written as ten vectorised ops costs 3-6x
cross-entropy however little arithmetic it does. The kernel computes the row's softmax once
(log p in double), the loss and the gradient in the same pass; backward only scales the saved
gradient (first-order only, like margin_penalty.py). Each function here returns None when the
kernel does not apply (CUDA, a dtype other than float32/float64, no C compiler, CALBENCH_NATIVE=0);
the caller then runs its PyTorch expression, which the tests compare the kernel against.
Formulas of each kind: the header of row_losses.c.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from calbench.methods import native

SOFT_CE, FOCAL, DUAL_FOCAL, ACLS = 0, 1, 2, 3
_NO_ARRAY = torch.zeros(1, dtype=torch.float64)


@functools.cache
def _kernels() -> dict:
    """{dtype: C function} for float32 and float64, or {} when the kernel cannot be built."""
    lib = native.load("row_losses")
    if lib is None:
        return {}
    kernels = {}
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        fn = getattr(lib, f"calbench_row_losses_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]
        kernels[dtype] = fn
    return kernels


def kernel_for(logits: torch.Tensor):
    """The C function for these logits, or None (see the module docstring)."""
    if logits.device.type != "cpu":
        return None
    return _kernels().get(logits.dtype)


class _NativeRowLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, partners, kernel, kind, params, edges, gammas):
        x = logits.contiguous()
        n, k = x.shape
        grad = torch.empty_like(x)
        total = torch.empty((), dtype=torch.float64)
        status = kernel(x.data_ptr(), targets.data_ptr(), partners.data_ptr(), n, k, kind, params.data_ptr(),
                        edges.data_ptr(), gammas.data_ptr(), grad.data_ptr(), total.data_ptr())
        if status == 1:
            raise IndexError("Target is out of bounds.")
        if status:
            raise MemoryError("row_losses kernel: out of memory")
        ctx.save_for_backward(grad)
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        if float(grad_out) == 1.0:      # loss.backward(): the saved gradient as is
            return grad, None, None, None, None, None, None, None
        return grad * grad_out, None, None, None, None, None, None, None


def _run(logits, targets, kind, params, partners=None, edges=_NO_ARRAY, gammas=_NO_ARRAY):
    kernel = kernel_for(logits)
    if kernel is None:
        return None
    t = targets.to(torch.int64).contiguous()
    z = t if partners is None else partners.to(torch.int64).contiguous()
    p = torch.tensor(params, dtype=torch.float64)
    return _NativeRowLoss.apply(logits, t, z, kernel, kind, p, edges, gammas)


def two_target_ce(logits, targets, partners, split: int, w_first: float, w_rest: float, lam: float):
    """sum over rows < split of -w_first log p_y, plus over the rest of
    -w_rest (lam log p_y + (1 - lam) log p_z), z = partners[i - split]; or None."""
    return _run(logits, targets, SOFT_CE, [float(split), w_first, w_rest, lam], partners=partners)


def binned_focal(logits, targets, inner_edges: torch.Tensor, gammas: torch.Tensor):
    """AdaFocal's mean over rows (gamma per bin of p_y; inverse focal for negative gammas); or None.
    `inner_edges` / `gammas` already rounded to the logits' dtype, as the PyTorch path uses them."""
    edges = inner_edges.double().contiguous()
    g = gammas.double().contiguous()
    return _run(logits, targets, FOCAL, [1.0 / logits.shape[0], float(g.numel())], edges=edges, gammas=g)


def dual_focal(logits, targets, gamma: float):
    """mean_i -(1 - p_y + p_j)^gamma log p_y (dual focal); or None."""
    return _run(logits, targets, DUAL_FOCAL, [1.0 / logits.shape[0], gamma])


def ce_plus_acls(logits, targets, margin: float, neg_c: float, pos_c: float):
    """CE + neg_c sum relu(max - margin - l)^2 + pos_c sum_i ties_i relu(max_i - margin)^2; or None."""
    return _run(logits, targets, ACLS, [1.0 / logits.shape[0], margin, neg_c, pos_c])
