"""Cross-entropy plus an explicit calibration penalty: ECP, MMCE and the pairwise constraints CPC.

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import ctypes
import functools
import math

import torch
import torch.nn.functional as F

from calbench.methods import native
from calbench.methods.base import Method
from calbench.methods.common import cross_entropy, upcast
from calbench.methods.registry import METHODS


@METHODS.register("ecp", description="Explicit confidence penalty: cross-entropy minus beta x entropy.",
                  paper="Pereyra et al., ICLR Workshops 2017")
class ConfidencePenalty(Method):
    """CE - beta * mean over N*K of (-p log p), p clamped to [1e-10, 1 - 1e-10] (docs/methods.md; beta = 0.1)."""

    def __init__(self, num_classes: int, *, beta: float = 0.1, ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.beta = float(beta)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        ce = cross_entropy(logits, targets)
        if self.beta == 0.0:
            return ce
        p = F.softmax(logits, dim=1).clamp(1e-10, 1.0 - 1e-10)
        entropy = (-p * p.log()).mean()
        return ce - self.beta * entropy


def mmce_penalty(logits: torch.Tensor, targets: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """(1/N^2) sum_ij (c_i - r_i)(c_j - r_j) exp(-|r_i - r_j| / bandwidth) (Laplacian kernel)."""
    p = F.softmax(upcast(logits), dim=1)
    r, pred = p.max(dim=1)
    c = (pred == targets).float()
    e = c - r
    kernel = torch.exp(-(r.unsqueeze(0) - r.unsqueeze(1)).abs() / bandwidth)
    n = r.shape[0]
    return (e.unsqueeze(0) * e.unsqueeze(1) * kernel).sum() / (n * n)


@METHODS.register("mmce", description="Maximum mean calibration error: CE + weight x a kernel calibration penalty.",
                  paper="Kumar et al., ICML 2018")
class MMCE(Method):
    """CE + weight * (1/N^2) sum_ij (c_i - r_i)(c_j - r_j) exp(-|r_i - r_j| / 0.4).

    The unweighted squared form (no square root; docs/methods.md), weight = 0.1 as in CALS App. C.
    The N x N kernel is per batch; for segmentation the rows are pixels, so keep batches small.
    """

    def __init__(self, num_classes: int, *, weight: float = 0.1, bandwidth: float = 0.4,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.weight = float(weight)
        self.bandwidth = float(bandwidth)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        ce = cross_entropy(logits, targets)
        if self.weight == 0.0:
            return ce
        return ce + self.weight * mmce_penalty(logits, targets, self.bandwidth)


def cpc_penalties(logits: torch.Tensor, targets: torch.Tensor):
    """Binary discrimination (BD) and binary exclusion (BE) terms of CPC, normalised as in docs/methods.md.

    BD = -(1/(N(K-1))) sum_{k != y} log sigmoid(l_y - l_k)
    BE = -(1/(N(K-1)(K-2))) sum_{j != k, both != y} 0.5 log sigmoid(l_j - l_k)
    BE has N K^2 terms; `_PairSum` computes it with its gradient a few rows at a time and keeps
    only an (N, K) gradient for backward (autograd would keep every (rows, K, K) intermediate:
    gigabytes and seconds per batch at K = 1000).
    """
    logits = upcast(logits)
    n, k = logits.shape
    onehot = F.one_hot(targets.long(), k).bool()
    l_y = logits.gather(1, targets.long().unsqueeze(1))
    bd_terms = F.logsigmoid(l_y - logits).masked_fill(onehot, 0.0)
    bd = -bd_terms.sum() / (n * (k - 1))
    if k < 3:
        return bd, logits.sum() * 0.0
    kernel = _pair_kernels().get(logits.dtype) if logits.device.type == "cpu" else None
    if kernel is not None:
        pair_sum = _NativePairSum.apply(logits, targets, kernel)
    else:
        pair_sum = _PairSum.apply(logits, targets.long().unsqueeze(1), onehot)
    be = -0.5 * pair_sum / (n * (k - 1) * (k - 2))
    return bd, be


@functools.cache
def _pair_kernels() -> dict:
    """{dtype: C function} of cpc_pairs.c for float32 / float64, or {} when it cannot be built."""
    lib = native.load("cpc_pairs")
    if lib is None:
        return {}
    kernels = {}
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        fn = getattr(lib, f"calbench_cpc_pairs_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                       ctypes.c_void_p]
        kernels[dtype] = fn
    return kernels


class _NativePairSum(torch.autograd.Function):
    """`_PairSum`'s S and gradient from the C kernel (cpc_pairs.c): each unordered pair once, one
    exp per pair, value and gradient in the same pass (half of `_PairSum`'s ordered pairs)."""

    @staticmethod
    def forward(ctx, logits, labels, kernel):
        x = logits.contiguous()
        t = labels.to(torch.int64).contiguous()
        grad = torch.empty_like(x)
        total = torch.empty((), dtype=torch.float64)
        status = kernel(x.data_ptr(), t.data_ptr(), x.shape[0], x.shape[1], grad.data_ptr(), total.data_ptr())
        if status == 1:
            raise IndexError("Target is out of bounds.")
        if status:
            raise MemoryError("cpc_pairs kernel: out of memory")
        ctx.save_for_backward(grad)
        return total.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


class _PairSum(torch.autograd.Function):
    """S = sum_i sum_{j != k, both != y_i} log sigmoid(l_ij - l_ik) and its analytic gradient.

    Over all ordered pairs, dS/dl_m = sum_k [sigmoid(l_k - l_m) - sigmoid(l_m - l_k)]
    = -sum_k tanh((l_m - l_k) / 2). The pairs with j = k (log sigmoid(0) = -log 2 each) and those
    that involve the label y are then taken out in O(N K): the label's row and column of the
    pair matrix, and the label's gradient, which is 0.

    Why the pairs stay O(N K^2): pairing (j, k) with (k, j), log sigmoid(a) + log sigmoid(-a)
    = -|a| - 2 log(1 + exp(-|a|)) with a = l_j - l_k. The |a| part has an exact O(K log K) form
    (sort the row: sum_{j<k} |s_j - s_k| = sum_i (2i - K + 1) s_i for ascending s), but
    log(1 + exp(-|a|)) is not a finite sum of products f(l_j) g(l_k), so no prefix sum or sort
    reduces it; expanding it (series in exp(-|a|), kernel approximations) gives only approximate
    sums, which would change the loss. The gradient term tanh((l_m - l_k) / 2) is likewise not
    separable. The exact cost is therefore N K^2 / 2 transcendental pair terms: on the CPU the C
    kernel of `_NativePairSum` evaluates exactly those (one exp per unordered pair); this blocked
    PyTorch version (all ordered pairs) is the fallback.
    """

    BLOCK = 1 << 22  # elements of one (rows, K, K) block

    @staticmethod
    def forward(ctx, logits, labels, onehot):
        n, k = logits.shape
        rows = max(1, _PairSum.BLOCK // (k * k))
        grad = torch.empty_like(logits)
        total = torch.zeros((), dtype=torch.float64, device=logits.device)  # no sync per block
        for start in range(0, n, rows):
            block = logits[start:start + rows]
            d = block.unsqueeze(2) - block.unsqueeze(1)                     # (b, j, k): l_j - l_k
            total += F.logsigmoid(d).sum()
            torch.sum(d.mul_(0.5).tanh_(), dim=2, out=grad[start:start + rows]).neg_()
        dy = logits - logits.gather(1, labels)                              # l_j - l_y
        with_label = (F.logsigmoid(dy) + F.logsigmoid(-dy)).masked_fill_(onehot, 0.0)
        total += n * k * math.log(2.0) - with_label.sum()
        grad.add_(torch.tanh(dy * 0.5)).masked_fill_(onehot, 0.0)          # drop the k = y term
        ctx.save_for_backward(grad)
        return total.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


@METHODS.register("cpc", description="Calibration by pairwise constraints: CE + binary discrimination and exclusion terms.",
                  paper="Cheng & Vasconcelos, CVPR 2022")
class PairwiseConstraints(Method):
    """CE + w_bd * BD + w_be * BE (see `cpc_penalties`).

    Weights follow CALS App. C (w_bd = 10, w_be = 1); the CALS authors' code uses w_bd = 0.1 —
    set `w_bd: 0.1` in a recipe to reproduce that choice. CPC has no official code.
    """

    def __init__(self, num_classes: int, *, w_bd: float = 10.0, w_be: float = 1.0,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.w_bd = float(w_bd)
        self.w_be = float(w_be)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        ce = cross_entropy(logits, targets)
        if self.w_bd == 0.0 and self.w_be == 0.0:
            return ce
        bd, be = cpc_penalties(logits, targets)
        return ce + self.w_bd * bd + self.w_be * be
