"""Cross-entropy plus an explicit calibration penalty: ECP, MMCE and the pairwise constraints CPC.

Formulas, defaults and the choices calbench makes: docs/methods.md.
"""

from __future__ import annotations

import ctypes
import functools
import math

import torch
import torch.nn.functional as F

from calbench import native
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


def cpc_loss(logits: torch.Tensor, targets: torch.Tensor, w_bd: float, w_be: float) -> torch.Tensor:
    """CE + w_bd * BD + w_be * BE, the two CPC terms normalised as in docs/methods.md:

    BD = -(1/(N(K-1))) sum_{k != y} log sigmoid(l_y - l_k)
    BE = -(1/(N(K-1)(K-2))) sum_{j != k, both != y} 0.5 log sigmoid(l_j - l_k)   (0 when K < 3)

    BE has N K^2 pair terms, but their sum has an O(K log K) form per row (derivation in
    `_NativePenalties`): order the row (sorted, or for float32 only bucketed), then the |a| part is
    a weighted sum of the ordered logits and the log(1 + exp(-|a|)) part a polynomial in
    u = exp(-|a|) whose powers are prefix products. On the CPU the C kernel (cpc_pairs.c) computes
    CE, BD, BE and the weighted gradient of their sum in one pass (the cross-entropy from the same
    recursions); elsewhere (CUDA, or no C compiler) CE and BD go through autograd and BE through
    the exact blocked pair loop of `_PairSum`. Both agree with the direct pair sum to float rounding
    (tests/methods/test_cpc_fast.py).
    """
    logits = upcast(logits)
    n, k = logits.shape
    scale_bd = -w_bd / (n * (k - 1)) if k > 1 else math.nan
    scale_be = -0.5 * w_be / (n * (k - 1) * (k - 2)) if k > 2 else 0.0
    kernel = _pair_kernels().get(logits.dtype) if logits.device.type == "cpu" else None
    if kernel is not None:
        return _NativePenalties.apply(logits, targets, kernel, (1.0 / n, scale_bd, scale_be))
    bd_sum, pair_sum = _torch_penalty_sums(logits, targets)
    return cross_entropy(logits, targets) + (scale_bd * bd_sum + scale_be * pair_sum)


def _torch_penalty_sums(logits: torch.Tensor, targets: torch.Tensor):
    """(sum_i BD_i, sum_i S_i) in PyTorch: BD through autograd, the pair sum S by `_PairSum`."""
    k = logits.shape[1]
    onehot = F.one_hot(targets.long(), k).bool()
    l_y = logits.gather(1, targets.long().unsqueeze(1))
    bd_sum = F.logsigmoid(l_y - logits).masked_fill(onehot, 0.0).sum()
    if k < 3:
        return bd_sum, logits.sum() * 0.0
    return bd_sum, _PairSum.apply(logits, targets.long().unsqueeze(1), onehot)


def native_penalty_sums(logits, targets, kernel, w_bd: float, w_be: float, w_ce: float = 0.0):
    """The C kernel's (sum_i BD_i, sum_i S_i, sum_i CE_i) as float64 and
    w_ce dCE/dl + w_bd dBD/dl + w_be dS/dl (in the logits' dtype)."""
    x = logits.detach().contiguous()
    t = targets.to(torch.int64).contiguous()
    grad = torch.empty_like(x)
    sums = torch.empty(3, dtype=torch.float64)
    status = kernel(x.data_ptr(), t.data_ptr(), x.shape[0], x.shape[1], w_ce, w_bd, w_be, grad.data_ptr(),
                    sums.data_ptr())
    if status == 1:
        raise IndexError("Target is out of bounds.")
    if status:
        raise MemoryError("cpc_pairs kernel: out of memory")
    return sums, grad


@functools.cache
def _pair_kernels() -> dict:
    """{dtype: C function} of cpc_pairs.c for float32 / float64, or {} when it cannot be built."""
    lib = native.load("cpc_pairs", package="methods")
    if lib is None:
        return {}
    kernels = {}
    for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
        fn = getattr(lib, f"calbench_cpc_penalties_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_double,
                       ctypes.c_double, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p]
        kernels[dtype] = fn
    return kernels


class _NativePenalties(torch.autograd.Function):
    """scale_ce * sum_i CE_i + scale_bd * sum_i BD_i + scale_be * sum_i S_i and its gradient from the
    C kernel (cpc_pairs.c), in O(N K log K) (the K^2 pairs of each row are never visited).

    For row i with label y let s_0 <= ... <= s_{m-1} be the m = K - 1 other logits, sorted; for
    j < k, a = s_k - s_j >= 0 and u = exp(-a). Pairing (j, k) with (k, j),
        S_i = sum_{j<k} [log sigmoid(a) + log sigmoid(-a)] = -sum_{j<k} a - 2 sum_{j<k} log(1 + u).
    (a) sum_{j<k} (s_k - s_j) = sum_k (2k - m + 1) s_k, exactly.
    (b) log(1 + u) = sum_{n=1}^{d} c_n u^n on [0, 1] up to the interpolation error (Chebyshev
        points; the function is analytic there, nearest singularity u = -1, so the error falls
        like (3 + sqrt 8)^-d). Since u_jk^n = exp(-n s_k) exp(n s_j) factors,
        sum_{j<k} u_jk^n = sum_k P_k^(n), P_0 = 0, P_k^(n) = r_k^n (P_{k-1}^(n) + 1),
        r_k = exp(-(s_k - s_{k-1})) <= 1: one exp per logit, no overflow.
    (c) dS_i/dv_q = -sum_p sign(v_q - v_p) tanh(|v_q - v_p| / 2) with tanh(a/2) = 1 - 2 u/(1 + u),
        and u/(1 + u) = sum_n b_n u^n likewise, so at sorted position k
        dS_i/ds_k = -(2k - m + 1) + 2 sum_n b_n (P_k^(n) - Q_k^(n)), Q the same recursion run
        from the top (Q_{m-1} = 0, Q_k^(n) = r_{k+1}^n (Q_{k+1}^(n) + 1)); ties contribute 0.
    The same sums hold for the pairs j < k of ANY order of the values (a may then be negative:
    log sigmoid(a) + log sigmoid(-a) = -a - 2 log(1 + e^-a) and tanh(a/2) = 1 - 2 g(e^-a) for every
    real a), as long as the polynomials hold for every u that occurs. Float32 rows are therefore
    only put in bucket order (a counting sort into buckets at most 0.12 wide: u < e^(1/8)), and
    their polynomials (d = 12) are fitted on [0, e^(1/8)]: within 2.2e-10 (log(1 + u)) and 2.0e-9
    (u/(1 + u)); each pair's value is >= 2 log 2, so S equals the pair sum to below float32
    rounding. Float64 rows are sorted and use d = 22 on [0, 1] (errors 2.8e-17, 6.4e-17: below
    float64 rounding). The recursions run in double for float32 logits too (in float, a tight
    cluster's P_k ~ k would gather rounding like eps k^2). Measured against a float64 direct pair
    sum (K = 1000, logits ~ N(0, 25), with ties, +-1e4 spreads, clusters and buckets full of pairs
    out of order in tests/methods/test_cpc_fast.py): float32 S to 2.5e-13 relative and its
    gradient to 3e-8 x (K - 1) absolute (the exact float32 pair loop this replaces: 9e-9 and
    1.8e-6 x (K - 1)); float64 2e-16 and 4e-16 x (K - 1), 1.1e-14 x (K - 1) on a tight cluster
    (tested at ~3x those bounds). BD is evaluated directly per logit in the same pass, and the
    cross-entropy comes from the same recursions: sum_k exp(s_k - s_{m-1}) = 1 + P_{m-1}^(1), and
    exp(s_k - s_{m-1}) = r_{k+1} exp(s_{k+1} - s_{m-1}) in the pass from the top, so the whole
    loss CE + w_bd BD + w_be BE and its gradient are one kernel call (cpc_pairs.c's header says
    where the time goes).
    """

    @staticmethod
    def forward(ctx, logits, labels, kernel, scales):
        scale_ce, scale_bd, scale_be = scales
        sums, grad = native_penalty_sums(logits, labels, kernel, scale_bd, scale_be, scale_ce)
        ctx.save_for_backward(logits, labels)   # only for a second backward (retain_graph)
        ctx.grad, ctx.kernel, ctx.scales = grad, kernel, scales
        bd, be, ce = sums.tolist()              # in Python floats: 2 us, against 10 us as tensor ops
        return torch.tensor(scale_ce * ce + (scale_bd * bd + scale_be * be), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        """The forward pass's gradient itself, handed over (autograd then takes it as .grad without
        a copy; `grad * grad_out` cost an allocation and a pass, ~15 us at 128 x 1000); a second
        backward through a retained graph recomputes it."""
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            logits, labels = ctx.saved_tensors
            scale_ce, scale_bd, scale_be = ctx.scales
            grad = native_penalty_sums(logits, labels, ctx.kernel, scale_bd, scale_be, scale_ce)[1]
        if grad_out.numel() != 1 or float(grad_out) != 1.0:
            grad = grad.mul_(grad_out)
        return grad, None, None, None


class _PairSum(torch.autograd.Function):
    """S = sum_i sum_{j != k, both != y_i} log sigmoid(l_ij - l_ik) and its analytic gradient, exactly,
    over all pairs: the PyTorch fallback of `_NativePenalties` (CUDA, or no C compiler).

    Over all ordered pairs, dS/dl_m = sum_k [sigmoid(l_k - l_m) - sigmoid(l_m - l_k)]
    = -sum_k tanh((l_m - l_k) / 2). The pairs with j = k (log sigmoid(0) = -log 2 each) and those
    that involve the label y are then taken out in O(N K): the label's row and column of the
    pair matrix, and the label's gradient, which is 0. This stays O(N K^2) (blocked; only an
    (N, K) gradient is kept for backward). The sorted form of `_NativePenalties` could be written
    with torch.sort and logcumsumexp over n * s for each power n, but in log space its rounding
    grows with |s| (too coarse in float32) and it costs 2d passes over the row; on a GPU the K^2
    pair terms are cheap enough, so the fallback stays exact and simple.
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
    """CE + w_bd * BD + w_be * BE (see `cpc_loss`).

    Weights follow CALS App. C (w_bd = 10, w_be = 1); the CALS authors' code uses w_bd = 0.1 —
    set `w_bd: 0.1` in a recipe to reproduce that choice. CPC has no official code.
    """

    def __init__(self, num_classes: int, *, w_bd: float = 10.0, w_be: float = 1.0,
                 ignore_index: int = -100):
        super().__init__(num_classes, ignore_index)
        self.w_bd = float(w_bd)
        self.w_be = float(w_be)

    def loss_rows(self, logits, targets, features=None, ctx=None) -> torch.Tensor:
        if self.w_bd == 0.0 and self.w_be == 0.0:
            return cross_entropy(logits, targets)
        return cpc_loss(logits, targets, self.w_bd, self.w_be)
