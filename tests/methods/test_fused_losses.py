"""The one-call C kernels of MDCA, DCA, RankMixup (M-NDCG and MRL) and dual focal loss
(row_losses.c) give the value and gradient of the PyTorch autograd path they replace (kept for CUDA,
CALBENCH_NATIVE=0 and a failed build), in float32 and float64: with ignored rows, one row, two
classes, ties at the max, ties in dual focal's "largest probability strictly below p_y", tied
relevances and same-class pairs in RankMixup, MRL's hinge at its kink. Also: the long-tail shift
cache follows the class counts, and the kernels' build key covers the shared header."""

import pytest
import torch

from calbench import native
from calbench.methods import row_losses

from . import harness

FUSED = ["mdca", "dca", "rankmixup", "rankmixup-mrl", "dual-focal"]
HPARAMS = {"mdca": [{}, {"base": "ls", "alpha": 0.2, "beta": 3.0}, {"beta": 0.5}, {"base": "fl", "gamma": 2.0},
                    {"base": "fl", "gamma": 0.5, "beta": 2.0}],
           "dca": [{}, {"beta": 10.0}],
           "rankmixup": [{}, {"copies": 1, "alpha": 0.5}, {"copies": 4, "weight": 1.0}],
           "rankmixup-mrl": [{}, {"margin": 0.5, "weight": 1.0}],
           "dual-focal": [{}, {"gamma": 0.5}]}
CASES = [(name, i) for name in FUSED for i in range(len(HPARAMS[name]))]
TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-13}, torch.float32: {"rtol": 2e-5, "atol": 2e-7}}

pytestmark = pytest.mark.skipif(not row_losses._kernels(), reason="no C compiler: the PyTorch path is used")


def value_and_grad(method, b, dtype, kernel: bool, monkeypatch, scale=1.0):
    """(loss, dloss/dlogits, graph node names) with the C kernel on or off."""
    with monkeypatch.context() as patch:
        if not kernel:
            patch.setattr(row_losses, "_kernels", lambda: {})
        x = b.logits.to(dtype).clone().requires_grad_(True)
        loss = b.loss(method, logits=x)
        (grad,) = torch.autograd.grad(loss * scale, x)
    return loss.detach(), grad, type(loss.grad_fn).__name__


def assert_kernel_equals_autograd(method, b, dtype, monkeypatch, scale=1.0):
    got = value_and_grad(method, b, dtype, True, monkeypatch, scale)
    want = value_and_grad(method, b, dtype, False, monkeypatch, scale)
    assert "Native" in got[2] and "Native" not in want[2]          # both paths really ran
    assert got[0].dtype == got[1].dtype == dtype
    torch.testing.assert_close(got[0], want[0], **TOL[dtype])
    torch.testing.assert_close(got[1], want[1], **TOL[dtype])
    assert torch.isfinite(got[1]).all()


def with_ties(b):
    """Row 0: a two-way tie at the max; row 1: every logit equal; row 2: a tie just below the max
    (dual focal's p_j held by two classes)."""
    b.logits[0, :2] = b.logits[0].max() + 1.0
    b.logits[1] = 2.0
    b.targets[0] = 0                                   # p_y tied with class 1: not "below" p_y
    if b.logits.shape[1] > 3:
        b.targets[2] = 0
        b.logits[2, 1:3] = b.logits[2].max() - 0.5
        b.logits[2, 0] = b.logits[2].max() + 1.0
    return b


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_the_autograd_path(case, k, dtype, monkeypatch):
    name, index = case
    method = harness.build(name, k, HPARAMS[name][index])
    b = with_ties(harness.batch(method, 24, seed=k + index, scale=5.0))
    assert_kernel_equals_autograd(method, b, dtype, monkeypatch)


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_sample_and_a_scaled_backward(name, dtype, monkeypatch):
    method = harness.build(name, 5)
    assert_kernel_equals_autograd(method, harness.batch(method, 1, seed=3), dtype, monkeypatch, scale=2.5)


@pytest.mark.parametrize("name", ["mdca", "dca", "dual-focal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ignored_rows(name, dtype, monkeypatch):
    method = harness.build(name, 7)
    b = harness.batch(method, 20, seed=4)
    b.targets[::3] = method.ignore_index
    assert_kernel_equals_autograd(method, b, dtype, monkeypatch)


@pytest.mark.parametrize("name", FUSED)
def test_huge_logits_stay_finite(name, monkeypatch):
    method = harness.build(name, 6)
    b = harness.batch(method, 8, seed=5)
    b.logits = torch.where(b.logits > 0, 1e4, -1e4).to(torch.float64)
    assert_kernel_equals_autograd(method, b, torch.float32, monkeypatch)


def hand_made_rankmixup(name, copies, lams, same_class_rows=(0,)):
    """n = 6 samples, hand-picked lam per copy (tied relevances 0.7 / 0.3, an unmixed 1.0) and
    permutations with fixed points (a same-class pair: relevance 1)."""
    method = harness.build(name, 5, {"copies": copies} if name == "rankmixup" else {})
    n = 6
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, 5, (n,), generator=g)
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(copies)])
    for i in same_class_rows:
        perm[:, i] = i
    logits = torch.randn(n * (copies + 1), 5, generator=g, dtype=torch.float64) * 3
    logits[n + 1, :2] = logits[n + 1].max() + 1.0              # a tie at a mixed row's max
    ctx = {"lam": torch.tensor(lams, dtype=torch.float64), "perm": perm}
    return method, harness.Batch(logits, targets.repeat(copies + 1), None, ctx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rankmixup_tied_relevances_keep_their_draw_order(dtype, monkeypatch):
    method, b = hand_made_rankmixup("rankmixup", 4, [0.7, 0.3, 1.0, 0.5])
    assert_kernel_equals_autograd(method, b, dtype, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mrl_hinge_at_its_kink_and_unmixed_pairs(dtype, monkeypatch):
    method, b = hand_made_rankmixup("rankmixup-mrl", 1, [0.6], same_class_rows=(0, 1))
    n = 6
    b.logits[2] = torch.tensor([3.0, 0.0, -1.0, 1.0, 2.0])
    b.logits[n + 2] = b.logits[2] - method.margin                 # gap exactly 0: no gradient
    b.targets[b.ctx["perm"][0, 2]] = (b.targets[2] + 1) % 5       # ... on a two-class pair
    b.targets[n:] = b.targets[:n]
    assert_kernel_equals_autograd(method, b, dtype, monkeypatch)
    _, grad, _ = value_and_grad(method, b, dtype, True, monkeypatch)
    ce_only = torch.softmax(b.logits[n + 2].to(dtype), 0) * 0
    torch.testing.assert_close(grad[n + 2], ce_only)


def test_bad_permutation_raises():
    method, b = hand_made_rankmixup("rankmixup-mrl", 1, [0.6])
    b.ctx["perm"][0, 0] = 6
    with pytest.raises(IndexError):
        b.loss(method, logits=b.logits.float())


@pytest.mark.parametrize("name", ["logit-adjust", "balanced-softmax"])
def test_long_tail_shift_follows_the_class_counts(name):
    method = harness.build(name, 6)
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randint(0, 6, (10,))
    first = method.loss(x, y)
    counts = torch.tensor([1.0, 2.0, 50.0, 4.0, 0.0, 9.0], dtype=torch.float64)
    method.set_class_counts(counts)
    log_prior = torch.log(counts.clamp_min(1.0) / counts.clamp_min(1.0).sum())
    want = torch.nn.functional.cross_entropy(x + log_prior, y)
    assert not torch.allclose(first, want)
    torch.testing.assert_close(method.loss(x, y), want, rtol=1e-12, atol=1e-12)


def test_the_build_key_covers_the_headers(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path))
    source = tmp_path / "tiny.c"
    source.write_text('#include "tiny.h"\nint calbench_answer(void) { return ANSWER; }\n')
    (tmp_path / "tiny.h").write_text("#define ANSWER 42\n")
    compiler = native._compiler()
    first = native.build(source, compiler, native.FLAGS)
    (tmp_path / "tiny.h").write_text("#define ANSWER 43\n")
    assert native.build(source, compiler, native.FLAGS) != first


def test_a_failing_native_build_falls_back_to_the_portable_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "NATIVE", ["-mno-such-option-calbench"])
    monkeypatch.setattr(native, "_native_target", lambda compiler: "a CPU")
    lib = native.load.__wrapped__("row_losses", package="methods")
    assert lib is not None and hasattr(lib, "calbench_rank_mixup_f32")
    assert len(list((tmp_path / "kernels").iterdir())) == 1       # only the portable build


@pytest.mark.parametrize("name", ["mdca", "dca", "dual-focal"])
def test_fewer_targets_than_rows_never_reach_the_kernel(name):
    method = harness.build(name, 5)
    with pytest.raises((ValueError, RuntimeError)):                # PyTorch's own shape error
        method.loss(torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2]))
