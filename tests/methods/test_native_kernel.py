"""The C kernel of the fused CE + logit-distance loss equals the PyTorch path and the numpy formulas."""

import warnings

import numpy as np
import pytest
import torch

from calbench import native
from calbench.methods import create_method, margin_penalty
from .references.cals import alm_loss, hinge_loss
from .references.margin import mbls as mbls_reference

pytestmark = pytest.mark.skipif(not margin_penalty._kernels(),
                                reason="no C compiler: the kernel is optional, the PyTorch path is used")


def torch_path(monkeypatch):
    monkeypatch.setattr(margin_penalty, "_kernels", lambda: {})


def batch(n, k, dtype, seed=0, scale=8.0, ties=True):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=g, dtype=torch.float64) * scale).to(dtype)
    if ties and k > 2:
        logits[0, :2] = logits[0].max() + 1.0                 # two-way tie at the max
        logits[1] = 3.0                                       # all equal
    return logits, torch.randint(0, k, (n,), generator=g)


def make(name, k, seed=1):
    """mbls with a scalar weight; cals-hr / cals-alm with distinct per-class multipliers."""
    g = torch.Generator().manual_seed(seed)
    if name == "mbls":
        return create_method("mbls", k, margin=4.0, weight=0.3)
    method = create_method(name, k, margin=4.0)
    method.multipliers.copy_(torch.rand(k, generator=g, dtype=torch.float64) * 2)
    if name == "cals-alm":
        method.penalties.copy_(1 + torch.rand(k, generator=g, dtype=torch.float64) * 9)
    return method


def value_and_grad(method, logits, labels):
    x = logits.clone().requires_grad_(True)
    loss = method.loss(x, labels)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("name", ["mbls", "cals-hr", "cals-alm"])
@pytest.mark.parametrize("k", [2, 10, 200, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_the_pytorch_path(name, k, dtype, monkeypatch):
    logits, labels = batch(67, k, dtype)
    method = make(name, k)
    got = value_and_grad(method, logits, labels)
    torch_path(monkeypatch)
    want = value_and_grad(method, logits, labels)
    assert got[0].dtype == got[1].dtype == dtype
    tol = {"rtol": 1e-12, "atol": 1e-15} if dtype == torch.float64 else {"rtol": 2e-6, "atol": 1e-8}
    torch.testing.assert_close(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)


@pytest.mark.parametrize("name", ["mbls", "cals-hr", "cals-alm"])
def test_float32_kernel_matches_the_numpy_formula(name):
    k = 200
    logits, labels = batch(128, k, torch.float32, ties=False)
    method = make(name, k)
    l64, y = logits.double().numpy(), labels.numpy()
    lam = method.multipliers.numpy() if name != "mbls" else None
    want = {"mbls": lambda: mbls_reference(l64, y, margin=4.0, weight=0.3),
            "cals-hr": lambda: hinge_loss(l64, y, 4.0, lam),
            "cals-alm": lambda: alm_loss(l64, y, 4.0, lam, method.penalties.numpy())}[name]()
    assert float(method.loss(logits, labels)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["mbls", "cals-hr", "cals-alm"])
def test_kernel_passes_gradcheck(name):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64) * 5
    labels = torch.randint(0, 7, (6,), generator=g)
    d = logits.amax(dim=1, keepdim=True) - logits
    assert ((d - 4.0).abs() > 1e-3).all()  # away from the hinge's kink
    method = make(name, 7)
    assert torch.autograd.gradcheck(lambda x: method.loss(x, labels), (logits.requires_grad_(True),))


def test_non_contiguous_logits_and_int32_targets(monkeypatch):
    logits, labels = batch(40, 30, torch.float32)
    strided = logits.t().contiguous().t()[:, ::2]          # non-contiguous view, K = 15
    method = make("cals-alm", 15)
    got = value_and_grad(method, strided, labels.remainder(15).int())
    torch_path(monkeypatch)
    want = value_and_grad(method, strided.contiguous(), labels.remainder(15))
    torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_target_raises_like_cross_entropy(bad):
    logits, labels = batch(8, 5, torch.float32)
    labels[3] = bad
    with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
        create_method("mbls", 5).loss(logits, labels)


def test_result_does_not_depend_on_the_thread_count():
    logits, labels = batch(256, 300, torch.float32)
    method = make("cals-alm", 300)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = value_and_grad(method, logits, labels)
        torch.set_num_threads(max(2, threads))
        many = value_and_grad(method, logits, labels)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_kernel_sees_multipliers_updated_in_place(monkeypatch):
    logits, labels = batch(32, 10, torch.float32)
    method = make("cals-alm", 10)
    before = method.loss(logits, labels)
    val, val_labels = batch(50, 10, torch.float32, seed=9)
    method.end_epoch(val * 3, val_labels, epoch=9)             # moves lambda and rho in place
    after = method.loss(logits, labels)
    torch_path(monkeypatch)
    assert float(after) != float(before)
    assert float(after) == pytest.approx(float(method.loss(logits, labels)), rel=1e-6)


def test_backward_scales_by_the_incoming_gradient():
    logits, labels = batch(16, 12, torch.float64)
    method = make("cals-hr", 12)
    x = logits.clone().requires_grad_(True)
    (one,) = torch.autograd.grad(method.loss(x, labels), x)
    (three,) = torch.autograd.grad(3.0 * method.loss(x, labels), x)
    torch.testing.assert_close(three, 3.0 * one)


def test_build_is_cached_by_content_and_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path))
    source = tmp_path / "tiny.c"
    source.write_text("int calbench_answer(void) { return 42; }\n")
    compiler = native._compiler()
    first = native.build(source, compiler, native.FLAGS)
    stamp = first.stat().st_mtime_ns
    assert native.build(source, compiler, native.FLAGS) == first and first.stat().st_mtime_ns == stamp
    source.write_text("int calbench_answer(void) { return 43; }\n")
    second = native.build(source, compiler, native.FLAGS)
    assert second != first and second.exists()
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == sorted([first.name, second.name])


def test_a_failing_compiler_falls_back_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native.load.__wrapped__("margin_penalty", package="methods") is None
    assert any("PyTorch path" in str(w.message) for w in caught)
    assert not list((tmp_path / "kernels").iterdir())       # no half-written library left behind


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("CALBENCH_NATIVE", "0")
    assert native.load.__wrapped__("margin_penalty", package="methods") is None


def test_every_method_gives_the_same_loss_with_and_without_the_kernel(monkeypatch):
    logits, labels = batch(20, 10, torch.float64)
    got = {n: float(make(n, 10).loss(logits, labels)) for n in ("mbls", "cals-hr", "cals-alm")}
    torch_path(monkeypatch)
    want = {n: float(make(n, 10).loss(logits, labels)) for n in got}
    assert got == pytest.approx(want, rel=1e-12)
    assert np.isfinite(list(got.values())).all()


def test_gradients_accumulate_over_a_retained_graph():
    logits, labels = batch(16, 12, torch.float32)
    x = logits.clone().requires_grad_(True)
    loss = make("mbls", 12).loss(x, labels)
    loss.backward(retain_graph=True)
    once = x.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(x.grad, 3 * once)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_give_a_nan_loss_like_pytorch(bad, monkeypatch):
    logits, labels = batch(6, 9, torch.float32)
    logits[2, 4] = bad
    got = float(make("cals-alm", 9).loss(logits, labels))
    torch_path(monkeypatch)
    want = float(make("cals-alm", 9).loss(logits, labels))
    assert np.isnan(got) and np.isnan(want)
