"""CPC's O(K log K) C kernel (cpc_pairs.c) against a float64 direct sum over all ordered pairs.

The kernel replaces the K^2 pair terms of the binary exclusion sum by a sort, a weighted sum and
polynomial prefix recursions (derivation: `_NativePenalties` in calbench/methods/penalties.py);
its value and gradient must equal the direct pair sum to float rounding, on every kind of row the
sort and the recursions treat differently.
"""

import numpy as np
import pytest
import torch

from calbench.methods import create_method, penalties

pytestmark = pytest.mark.skipif(not penalties._pair_kernels(),
                                reason="no C compiler: the kernel is optional, the PyTorch path is used")


def direct_sums(logits, targets):
    """(sum_i BD_i, sum_i S_i, dBD/dl, dS/dl) in float64 over all ordered pairs (docs/methods.md)."""
    x = np.asarray(logits, dtype=np.float64)
    n, k = x.shape
    bd = pair = 0.0
    g_bd, g_pair = np.zeros_like(x), np.zeros_like(x)
    for i in range(n):
        others = np.array([j for j in range(k) if j != targets[i]], dtype=np.int64)
        v = x[i, others]
        a = x[i, targets[i]] - v
        bd += float(-np.logaddexp(0.0, -a).sum())
        sig = np.exp(-np.logaddexp(0.0, a))                     # sigmoid(-a)
        g_bd[i, others], g_bd[i, targets[i]] = -sig, sig.sum()
        d = v[:, None] - v[None, :]
        terms = -np.logaddexp(0.0, -d)
        np.fill_diagonal(terms, 0.0)
        pair += float(terms.sum())
        g_pair[i, others] = -np.tanh(d / 2).sum(axis=1)
    return bd, pair, g_bd, g_pair


def kernel_sums(logits, targets):
    """The kernel's (BD sum, S sum, dBD/dl, dS/dl), from two calls with unit weights."""
    kernel = penalties._pair_kernels()[logits.dtype]
    sums, g_bd = penalties.native_penalty_sums(logits, targets, kernel, 1.0, 0.0)
    _, g_pair = penalties.native_penalty_sums(logits, targets, kernel, 0.0, 1.0)
    return float(sums[0]), float(sums[1]), g_bd.double().numpy(), g_pair.double().numpy()


TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def assert_matches(logits, targets, dtype):
    """Sums to `TOLERANCE` relative; gradients to TOLERANCE x (K - 1) absolute (each gradient entry
    sums K - 1 terms of size <= 1, so that is the relative precision of the entry's terms)."""
    x = logits.to(dtype)
    want = direct_sums(x.double().numpy(), targets.numpy())
    got = kernel_sums(x, targets)
    tol, k = TOLERANCE[dtype], x.shape[1]
    assert got[0] == pytest.approx(want[0], rel=tol, abs=tol)
    assert got[1] == pytest.approx(want[1], rel=tol, abs=tol)
    np.testing.assert_allclose(got[2], want[2], rtol=0, atol=tol * max(k - 1, 1))
    np.testing.assert_allclose(got[3], want[3], rtol=0, atol=tol * max(k - 1, 1))


def special_rows(k, generator):
    """37 rows (two full groups of 16 and a partial one): random, ties, +-1e4 spreads, all equal,
    a tight cluster with far outliers (crowded buckets), and labels at either end of the order."""
    x = torch.randn(37, k, generator=generator, dtype=torch.float64) * 5
    y = torch.randint(0, k, (37,), generator=generator)
    x[0] = 2.0                                                       # all equal
    x[1] = torch.round(x[1])                                         # many ties
    x[2, : k // 2 + 1] = x[2, 0]                                     # one big tie
    x[3, ::2] = -1e4                                                 # spreads: r underflows to 0
    x[4] = torch.where(torch.arange(k) % 3 == 0, 1e4, -1e4) + x[4] * 1e-3
    x[5] = 1e-3 * torch.randn(k, generator=generator, dtype=torch.float64)
    x[5, :2] = torch.tensor([-50.0, 80.0])                           # a cluster and two outliers
    x[6] = torch.linspace(-3, 3, k, dtype=torch.float64) ** 3        # uneven density
    y[7], y[8] = int(x[7].argmin()), int(x[8].argmax())              # label lowest / highest
    return x, y


@pytest.mark.parametrize("k", [3, 4, 10, 200, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_the_direct_pair_sum(k, dtype):
    x, y = special_rows(k, torch.Generator().manual_seed(k))
    assert_matches(x, y, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_row_and_no_pairs(dtype):
    g = torch.Generator().manual_seed(1)
    assert_matches(torch.randn(1, 50, generator=g, dtype=torch.float64), torch.tensor([7]), dtype)
    two = torch.randn(5, 2, generator=g, dtype=torch.float64)             # K = 2: no pairs
    assert_matches(two, torch.tensor([0, 1, 1, 0, 1]), dtype)
    assert kernel_sums(two.to(dtype), torch.tensor([0, 1, 1, 0, 1]))[1] == 0.0


def test_float64_values_that_round_to_the_same_float_are_ordered_exactly():
    """Sort keys are floats: float64 logits 1e-12 apart share a key until the exact fix-up."""
    g = torch.Generator().manual_seed(2)
    x = 1.0 + 1e-12 * torch.randn(3, 300, generator=g, dtype=torch.float64)
    x[1, ::7] += 3.0
    assert_matches(x, torch.tensor([0, 150, 299]), torch.float64)


def test_each_pair_term_to_float32_rounding():
    """One pair per row (K = 3) over gaps 0 .. 30: the exact value is -a - 2 log(1 + e^-a) and
    the gradient tanh(a / 2) on each end, so the polynomial degree shows directly: the float32
    degree's error (7.6e-9 in tanh) is below float32 rounding, one of degree 8 (1.5e-6) is not."""
    gaps = torch.linspace(0.0, 30.0, 3001, dtype=torch.float64)
    x = torch.stack([torch.full_like(gaps, 0.5), -gaps / 2, gaps / 2], dim=1)   # label: column 0
    y = torch.zeros(len(gaps), dtype=torch.int64)
    for dtype, atol in ((torch.float32, 3e-7), (torch.float64, 1e-15)):
        got = kernel_sums(x.to(dtype), y)
        want = direct_sums(x.to(dtype).double().numpy(), y.numpy())
        np.testing.assert_allclose(got[3], want[3], rtol=0, atol=atol)
        assert got[1] == pytest.approx(want[1], rel=atol)


def test_same_result_with_any_number_of_threads():
    x, y = special_rows(500, torch.Generator().manual_seed(3))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            kernel = penalties._pair_kernels()[torch.float32]
            results.append(penalties.native_penalty_sums(x.float(), y, kernel, 0.7, 1.3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_non_finite_rows_and_bad_targets():
    x = torch.randn(4, 20, dtype=torch.float64)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    kernel = penalties._pair_kernels()[torch.float64]
    sums, grad = penalties.native_penalty_sums(x, torch.tensor([0, 1, 2, 3]), kernel, 1.0, 1.0)
    assert torch.isnan(sums).all()
    assert torch.isnan(grad[1]).all() and torch.isnan(grad[2]).all() and torch.isfinite(grad[[0, 3]]).all()
    with pytest.raises(IndexError):
        penalties.native_penalty_sums(x, torch.tensor([0, 1, 20, 3]), kernel, 1.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_and_gradient_equal_the_pytorch_path(dtype, monkeypatch):
    """The whole cpc loss through the kernel equals the exact PyTorch fallback (`_PairSum`)."""
    x, y = special_rows(300, torch.Generator().manual_seed(4))
    x = x[:, :].clamp(-60, 60).to(dtype)                # the fallback's float32 logsigmoid needs finite gaps
    method = create_method("cpc", 300, w_bd=0.7, w_be=2.5)
    got_x = x.clone().requires_grad_(True)
    got = method.loss(got_x, y)
    got.backward()
    monkeypatch.setattr(penalties, "_pair_kernels", lambda: {})
    want_x = x.clone().requires_grad_(True)
    want = method.loss(want_x, y)
    want.backward()
    tol = {"rtol": 1e-12, "atol": 1e-15} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(got.detach(), want.detach(), **tol)
    torch.testing.assert_close(got_x.grad, want_x.grad, **tol)


@pytest.mark.parametrize("k", [17, 18, 33, 34, 65])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_lengths_at_the_vector_and_tile_edges(k, dtype):
    """m = K - 1 a multiple of 16 (the vector width of the ranking, the bucket scan and the 16 x 16
    transposition tiles), one past it, and one short of it."""
    x, y = special_rows(k, torch.Generator().manual_seed(100 + k))
    assert_matches(x, y, dtype)


def crowded_grid_rows(copies, generator):
    """6 rows of K = 301: the grid -20, -19.87, .., 20 shuffled, `copies` of its values (never the
    ends) replaced by a cluster t + 0.02 + 0.001 (j // 2), j = 0 .. copies - 1 (pairs of ties,
    scrambled), the label on another. With the ends fixed the 2m buckets are half a grid step
    wide, so the cluster's bucket holds exactly `copies` logits and every other at most one."""
    k = 301
    grid = torch.linspace(-20.0, 20.0, k, dtype=torch.float64)
    x, y = torch.empty(6, k, dtype=torch.float64), torch.empty(6, dtype=torch.int64)
    for row in range(6):
        order = torch.randperm(k, generator=generator)
        x[row] = grid[order]
        inner = [int(j) for j in torch.randperm(k, generator=generator) if 0 < order[j] < k - 1]
        y[row], cluster = inner[0], inner[1:copies + 1]
        t = float(x[row, cluster[0]])
        x[row, cluster] = t + 0.02 + 0.001 * torch.arange(copies, dtype=torch.float64).div(2).floor()
    return x, y


@pytest.mark.parametrize("copies", [7, 8, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_bucket_at_the_limit_of_the_branch_free_ranking(copies, dtype):
    """A bucket of 8 logits is the most the windowed ranking takes (the window reaches 7 either
    side); one of 9 goes to the insertion sort."""
    x, y = crowded_grid_rows(copies, torch.Generator().manual_seed(copies))
    assert_matches(x, y, dtype)


def test_bfloat16_logits_equal_the_float64_pair_sum_of_their_values():
    """Half-precision logits run in float32 (the method upcasts them): the loss and its gradient
    equal the float64 direct sums of the bfloat16 values, with ties from bfloat16's 8-bit mantissa."""
    k, w_bd, w_be = 200, 0.7, 2.5
    x, y = special_rows(k, torch.Generator().manual_seed(5))
    x = x.clamp(-1e4, 1e4).to(torch.bfloat16)
    method = create_method("cpc", k, w_bd=w_bd, w_be=w_be)
    logits = x.clone().requires_grad_(True)
    loss = method.loss(logits, y)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    values = x.double()
    bd, pair, g_bd, g_pair = direct_sums(values.numpy(), y.numpy())
    n = x.shape[0]
    scale_bd, scale_be = -w_bd / (n * (k - 1)), -0.5 * w_be / (n * (k - 1) * (k - 2))
    ce = torch.nn.functional.cross_entropy(values, y)
    want = float(ce) + scale_bd * bd + scale_be * pair
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    ce_grad = (torch.softmax(values, 1) - torch.nn.functional.one_hot(y, k)).numpy() / n
    want_grad = ce_grad + scale_bd * g_bd + scale_be * g_pair
    got_grad = logits.grad.double().numpy()
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-2, atol=1e-2 * np.abs(want_grad).max())


@pytest.mark.parametrize("rows, dtype, s_rel, grad_abs", [
    ("spread", torch.float32, 1e-12, 1e-7),
    ("spread", torch.float64, 1e-15, 1e-15),
    ("cluster", torch.float64, 1e-15, 3e-14),
])
def test_the_precision_the_kernel_header_states(rows, dtype, s_rel, grad_abs):
    """cpc_pairs.c's header: at K = 1000, float32 S to ~2.5e-13 relative and dS to ~3e-8 (K - 1);
    float64 2e-16 and 4e-16 (K - 1) on N(0, 25) rows, 1.1e-14 (K - 1) on a tight cluster. Bounds
    ~3x those, tighter than `assert_matches` (a change that loses a digit there fails here)."""
    k, g = 1000, torch.Generator().manual_seed(7)
    x = torch.randn(8, k, generator=g, dtype=torch.float64) * (5.0 if rows == "spread" else 1e-3)
    y = torch.randint(0, k, (8,), generator=g)
    want = direct_sums(x.to(dtype).double().numpy(), y.numpy())
    got = kernel_sums(x.to(dtype), y)
    assert got[1] == pytest.approx(want[1], rel=s_rel)
    np.testing.assert_allclose(got[3], want[3], rtol=0, atol=grad_abs * (k - 1))


@pytest.mark.parametrize("k", [1, 2, 3, 200, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cross_entropy_of_the_same_pass(k, dtype):
    """The kernel's CE (sum_k exp(s_k - s_last) = 1 + P^(1) from the forward recursion, the softmax
    by the backward one) equals float64 log-softmax, on the special rows (+-1e4 spreads: the
    label far below or above the rest, ties, all equal) and on K = 1, 2."""
    if k < 3:
        g = torch.Generator().manual_seed(k)
        x, y = torch.randn(20, k, generator=g, dtype=torch.float64) * 30, torch.randint(0, k, (20,), generator=g)
    else:
        x, y = special_rows(k, torch.Generator().manual_seed(200 + k))
    x = x.to(dtype)
    sums, grad = penalties.native_penalty_sums(x, y, penalties._pair_kernels()[dtype], 0.0, 0.0, 1.0)
    values = x.double()
    want = torch.nn.functional.cross_entropy(values, y, reduction="sum")
    want_grad = torch.softmax(values, 1) - torch.nn.functional.one_hot(y, k)
    value_rel, grad_abs = (1e-12, 2e-7) if dtype == torch.float32 else (1e-14, 1e-15)
    assert float(sums[2]) == pytest.approx(float(want), rel=value_rel, abs=1e-300)
    np.testing.assert_allclose(grad.double().numpy(), want_grad.numpy(), rtol=0, atol=grad_abs)


def widest_bucket_rows(generator):
    """8 rows of K = 1000 whose float32 buckets are as wide as the bucket order allows (0.12): the
    row spans 240 (two outliers) and the other 997 logits lie in [100, 100.119], one or two buckets
    in row order, so that most of their pairs come out of order (u up to e^0.119)."""
    x = 100.0 + 0.119 * torch.rand(8, 1000, generator=generator, dtype=torch.float64)
    x[:, 0], x[:, 1] = 0.0, 240.0
    return x, torch.randint(2, 1000, (8,), generator=generator)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairs_out_of_order_in_the_widest_buckets(dtype):
    """Float32 rows are in bucket order, not sorted: the polynomials must hold up to u = e^(1/8).
    Measured: S 4.4e-11 relative, dS 3e-9 (K - 1) (the sorted kernel: 3.3e-11 and 2.7e-9);
    float64 (sorted) 5e-16 and 1.2e-14 (K - 1). Bounds ~3x those."""
    x, y = widest_bucket_rows(torch.Generator().manual_seed(8))
    x = x.to(dtype)
    want = direct_sums(x.double().numpy(), y.numpy())
    got = kernel_sums(x, y)
    s_rel, grad_abs = (1.5e-10, 1e-8) if dtype == torch.float32 else (1.5e-15, 4e-14)
    assert got[1] == pytest.approx(want[1], rel=s_rel)
    np.testing.assert_allclose(got[3], want[3], rtol=0, atol=grad_abs * 999)


def test_backward_twice_and_scaled():
    """The autograd node hands its gradient over on the first backward: a second one through a
    retained graph recomputes it, and an upstream factor scales it."""
    x, y = special_rows(50, torch.Generator().manual_seed(9))
    logits = x.float().requires_grad_(True)
    loss = create_method("cpc", 50).loss(logits, y)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss * 3.0, logits)
    assert torch.isfinite(first).all() and first.abs().max() > 0
    torch.testing.assert_close(second, 3.0 * first, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_whose_other_logits_are_all_equal(dtype):
    """The float32 buckets span the label's logit too: other logits all equal with the label apart
    (above, below) fill one bucket; a ramp 1e-3 apart, one or a few."""
    x = torch.ones(3, 300, dtype=torch.float64)
    x[0, 5], x[1, 7] = 5.0, -3.0
    x[2] = torch.arange(300, dtype=torch.float64) * 1e-3
    assert_matches(x, torch.tensor([5, 7, 299]), dtype)
