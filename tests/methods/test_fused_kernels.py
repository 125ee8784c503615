"""The C kernels of row_losses.c (mixup, regmixup, adafocal, dual-focal, acls) and cpc_pairs.c (cpc)
give the value and gradient of the PyTorch path they replace, in float32 and float64, with ties."""

import pytest
import torch

from calbench.methods import penalties, row_losses

from . import harness

KERNEL_METHODS = ["mixup", "regmixup", "adafocal", "dual-focal", "acls", "cpc"]

pytestmark = pytest.mark.skipif(not (row_losses._kernels() and penalties._pair_kernels()),
                                reason="no C compiler: the kernels are optional, the PyTorch path is used")


def torch_path(monkeypatch):
    monkeypatch.setattr(row_losses, "_kernels", lambda: {})
    monkeypatch.setattr(penalties, "_pair_kernels", lambda: {})


def prepared(name, k, seed):
    """The method (adafocal with mixed-sign per-bin gammas and uneven edges) and a batch with ties."""
    method = harness.build(name, k, {"margin": 4.0} if name == "acls" else {})
    if name == "adafocal":
        g = torch.Generator().manual_seed(seed)
        method.gammas.copy_(torch.rand(method.num_bins, generator=g, dtype=torch.float64) * 6 - 1.5)
        method.edges.copy_(torch.linspace(0, 1, method.num_bins + 1, dtype=torch.float64) ** 2)
    b = harness.batch(method, 40, seed=seed, scale=5.0)
    b.logits[0, :2] = b.logits[0].max() + 1.0          # a two-way tie at the max
    b.logits[1] = 2.0                                   # a row of equal logits
    return method, b


def value_and_grad(method, b, dtype):
    x = b.logits.to(dtype).clone().requires_grad_(True)
    loss = b.loss(method, logits=x)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("name", KERNEL_METHODS)
@pytest.mark.parametrize("k", [3, 10, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_the_pytorch_path(name, k, dtype, monkeypatch):
    method, b = prepared(name, k, seed=k)
    got = value_and_grad(method, b, dtype)
    torch_path(monkeypatch)
    want = value_and_grad(method, b, dtype)
    assert got[0].dtype == got[1].dtype == dtype
    tol = {"rtol": 1e-10, "atol": 1e-13} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-7}
    torch.testing.assert_close(got[0], want[0], **tol)
    torch.testing.assert_close(got[1], want[1], **tol)


@pytest.mark.parametrize("name", KERNEL_METHODS)
def test_the_kernel_is_the_path_taken_on_cpu(name):
    method, b = prepared(name, 10, seed=0)
    loss = b.loss(method, logits=b.logits.float().requires_grad_(True))
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(f for f, _ in node.next_functions)
    assert any("Native" in type(node).__name__ for node in seen)


def test_out_of_range_target_raises():
    x = torch.randn(4, 5, requires_grad=True)
    with pytest.raises(IndexError):
        row_losses.dual_focal(x, torch.tensor([0, 1, 9, 2]), 2.0)
