"""Fused cross-entropy + logit-distance penalty, shared by mbls, cals-hr and cals-alm.

loss = mean_i(-log p_iy) + (1/(N K)) sum_ik P_k(d_ik),  d_ik = max_j l_ij - l_ik (max NOT detached).

Autograd through the dozen element-wise ops of the plain expression costs 4-10x cross-entropy on
the CPU. Two implementations of the value and its analytic gradient, tested equal to each other
and to plain autograd:

- CPU, float32/float64, hinge or PHR penalty: one pass of a C kernel (`margin_penalty.c`, built on
  first use by `calbench.native`) writes the loss and the gradient; backward only scales
  the saved gradient. Rows are split over torch's OpenMP threads; the value is summed in row order.
- otherwise (CUDA, P2 / P3, no C compiler, CALBENCH_NATIVE=0): one `autograd.Function` with a
  handful of vectorised PyTorch ops.

  dL/dl_ik = (p_ik - 1[k = y_i]) / N + (1/(N K)) (-P'_k(d_ik) + 1[k = argmax_i] sum_j P'_j(d_ij))

The argmax indicator is `l_ik == max_j l_ij`, split evenly among ties (the sub-gradient that
`torch.amax` uses). In the PyTorch path log p_y = l_y - max l + log(max p), exact because
max_k p_k = 1 / sum exp(l - max l) and max p >= 1/K never underflows. First-order only (no double
backward), which is all training and the CALS tests need; gradcheck in float64 verifies both paths.
Formulas: docs/methods.md.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Callable

import torch

from calbench import native

HINGE, PHR = 0, 1  # penalty kinds of the C kernel


@dataclass(frozen=True)
class HingePenalty:
    """P_k(d) = w_k relu(d - margin): MbLS (scalar weight) and CALS-HR (per-class multipliers)."""

    margin: float
    weights: torch.Tensor | float

    def terms(self, logits, row_max):
        """(sum_ik P_k(d_ik) as a 0-d tensor, slope (N, K), factor) with dP_k/dd_ik = factor * slope_ik."""
        excess = torch.sub(row_max - self.margin, logits).clamp_min_(0.0)
        if isinstance(self.weights, torch.Tensor):
            w = self.weights.to(logits.dtype)
            total = (excess @ w).sum()
            return total, excess.sign_().mul_(w), 1.0
        total = excess.sum() * self.weights
        return total, excess.sign_(), float(self.weights)

    def kernel_args(self, k: int, dtype: torch.dtype):
        if isinstance(self.weights, torch.Tensor):
            (w,) = _kernel_arrays(dtype, self.weights)
        else:
            w = _constant(k, float(self.weights), dtype)
        return HINGE, w, w, w


@dataclass(frozen=True)
class PHRPenalty:
    """PHR (CALS eq. 16) on h = d/m - 1: P = lam h + rho h^2 / 2 if a = lam + rho h >= 0, else
    -lam^2 / (2 rho); P' = relu(a).

    The value is computed as h (a + lam) / 2 (= lam h + rho h^2 / 2) on the active branch, with
    h = (d - m) / m. The equal closed form (relu(a)^2 - lam^2) / (2 rho) subtracts two numbers of
    size lam^2 and loses about log10(lam) digits in float32 (lambda reaches 1e6). Here |rho h| <= lam
    on the active branch, so h (a + lam) / 2 never subtracts nearly equal terms.
    """

    margin: float
    multipliers: torch.Tensor
    penalties: torch.Tensor

    def terms(self, logits, row_max):
        lam, rho = self.multipliers.to(logits.dtype), self.penalties.to(logits.dtype)
        distance = torch.sub(row_max, logits)
        # lam + rho (d/m - 1) = (lam - rho) + (rho/m)(max - l)
        active = torch.addcmul(lam - rho, distance, rho / self.margin).clamp_min_(0.0)
        h = distance.sub_(self.margin).div_(self.margin)
        value = torch.where(active > 0, h.mul_(active + lam).mul_(0.5), -lam * lam * (0.5 / rho))
        return value.sum(), active, 1.0 / self.margin

    def kernel_args(self, k: int, dtype: torch.dtype):
        return (PHR, *_kernel_arrays(dtype, self.multipliers, self.penalties))


@dataclass(frozen=True)
class GenericPenalty:
    """Any P(h) with its derivative P'(h), h = d/m - 1 (CALS eqs. 17, 18: P2, P3); PyTorch path only."""

    margin: float
    value: Callable
    derivative: Callable

    def terms(self, logits, row_max):
        h = torch.sub(row_max, logits).div_(self.margin).sub_(1.0)
        return self.value(h).sum(), self.derivative(h), 1.0 / self.margin

    def kernel_args(self, k: int, dtype: torch.dtype):
        return None


def hinge_penalty(margin: float, weights: torch.Tensor | float) -> HingePenalty:
    return HingePenalty(float(margin), weights)


def phr_penalty(margin: float, multipliers: torch.Tensor, penalties: torch.Tensor) -> PHRPenalty:
    return PHRPenalty(float(margin), multipliers, penalties)


def generic_penalty(margin: float, value: Callable, derivative: Callable) -> GenericPenalty:
    return GenericPenalty(float(margin), value, derivative)


Penalty = HingePenalty | PHRPenalty | GenericPenalty


def ce_plus_distance_penalty(logits: torch.Tensor, targets: torch.Tensor, penalty: Penalty) -> torch.Tensor:
    """(N, K) logits (float32/float64; autocast off inside), (N,) targets with no ignored rows."""
    kernel = _kernels().get(logits.dtype) if logits.device.type == "cpu" else None
    args = None if kernel is None else penalty.kernel_args(logits.shape[1], logits.dtype)
    if args is not None:
        return _NativeCEPlusDistance.apply(logits, targets, penalty.margin, kernel, *args)
    with torch.autocast(logits.device.type, enabled=False):
        return _CEPlusDistancePenalty.apply(logits, targets, penalty)


class _NativeCEPlusDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, margin, kernel, kind, a, b, c):
        x = logits.contiguous()
        t = targets.to(torch.int64).contiguous()
        n, k = x.shape
        grad = torch.empty_like(x)
        loss = torch.empty((), dtype=x.dtype)
        status = kernel(x.data_ptr(), t.data_ptr(), n, k, kind, margin, a.data_ptr(), b.data_ptr(),
                        c.data_ptr(), grad.data_ptr(), loss.data_ptr())
        if status == 1:
            raise IndexError(f"Target {int(t[(t < 0) | (t >= k)][0])} is out of bounds.")
        if status:
            raise MemoryError("margin_penalty kernel: out of memory")
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        if float(grad_out) == 1.0:  # loss.backward(): the saved gradient as is (autograd never
            return grad, None, None, None, None, None, None, None  # writes into it while saved)
        return grad * grad_out, None, None, None, None, None, None, None


class _CEPlusDistancePenalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, penalty):
        n, k = logits.shape
        p = torch.softmax(logits, dim=1)
        row_max = logits.amax(dim=1, keepdim=True)
        t = targets.long().unsqueeze(1)
        log_py = logits.gather(1, t) - row_max + p.amax(dim=1, keepdim=True).log()
        total, slope, factor = penalty.terms(logits, row_max)
        ctx.save_for_backward(logits, p, t, row_max, slope)
        ctx.scale = float(factor) / k
        return (total / k - log_py.sum()) / n

    @staticmethod
    def backward(ctx, grad_out):
        logits, p, t, row_max, slope = ctx.saved_tensors
        n = logits.shape[0]
        grad = p.clone()  # saved tensors stay intact: gradcheck and retain_graph backward twice
        grad.scatter_add_(1, t, torch.full(t.shape, -1.0, dtype=grad.dtype, device=grad.device))
        count = slope.sum(dim=1, keepdim=True)
        grad.sub_(slope, alpha=ctx.scale)
        at_max = torch.eq(logits, row_max, out=torch.empty_like(grad))
        ties = at_max.sum(dim=1, keepdim=True)
        grad.addcmul_(at_max, count.mul_(ctx.scale).div_(ties))
        return grad.mul_(grad_out / n), None, None


@functools.cache
def _kernels() -> dict:
    """{dtype: C function} for float32 and float64, or {} when the kernel cannot be built."""
    lib = native.load("margin_penalty", package="methods")
    if lib is None:
        return {}
    kernels = {}
    for dtype, suffix, scalar in ((torch.float32, "f32", ctypes.c_float), (torch.float64, "f64", ctypes.c_double)):
        fn = getattr(lib, f"calbench_ce_distance_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, scalar,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        kernels[dtype] = fn
    return kernels


_ARRAYS: dict = {}


def _kernel_arrays(dtype: torch.dtype, weights: torch.Tensor, rho: torch.Tensor | None = None) -> tuple:
    """(weights,) or (lam, rho, 1 / (2 rho)) as contiguous `dtype` arrays for the kernel.

    Cached until a buffer is updated in place (its `_version` moves, as in end_epoch and
    load_state_dict) or replaced (`.to()`): the multipliers change once per epoch, the loss is
    called every step. The entry holds the buffers themselves, so an id is never reused while cached.
    """
    key = (id(weights), id(rho), dtype)
    entry = _ARRAYS.get(key)
    versions = (weights._version, None if rho is None else rho._version)
    if entry is not None and entry[0] is weights and entry[1] is rho and entry[2] == versions:
        return entry[3]
    if rho is None:
        arrays = (weights.detach().to(dtype).contiguous(),)
    else:
        rho64 = rho.detach().double()
        arrays = tuple(v.to(dtype).contiguous() for v in (weights.detach(), rho64, 0.5 / rho64))
    if len(_ARRAYS) >= 64:
        _ARRAYS.clear()
    _ARRAYS[key] = (weights, rho, versions, arrays)
    return arrays


@functools.lru_cache(maxsize=64)
def _constant(k: int, value: float, dtype: torch.dtype) -> torch.Tensor:
    """A read-only (K,) tensor of one weight, reused across calls (the kernel never writes to it)."""
    return torch.full((k,), value, dtype=dtype)
