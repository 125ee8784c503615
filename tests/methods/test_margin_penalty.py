"""Both implementations of the fused CE + logit-distance loss (C kernel, PyTorch) equal plain autograd,
ties at the max included."""

import pytest
import torch
import torch.nn.functional as F

from calbench.methods import create_method, margin_penalty
from calbench.methods.cals import penalty_value

CASES = {
    "mbls": {"margin": 3.0, "weight": 0.7},
    "cals-hr": {"margin": 3.0, "lambda_init": 0.4},
    "cals-alm:phr": {"margin": 3.0, "lambda_init": 0.5, "rho_init": 2.0, "penalty": "phr"},
    "cals-alm:p2": {"margin": 3.0, "lambda_init": 0.5, "rho_init": 2.0, "penalty": "p2"},
    "cals-alm:p3": {"margin": 3.0, "lambda_init": 0.5, "rho_init": 2.0, "penalty": "p3"},
}


@pytest.fixture(params=["kernel", "pytorch"])
def path(request, monkeypatch):
    """Run the test through the C kernel (when a compiler is present) and through the PyTorch path."""
    if request.param == "pytorch":
        monkeypatch.setattr(margin_penalty, "_kernels", lambda: {})
    elif not margin_penalty._kernels():
        pytest.skip("no C compiler: the kernel is optional")
    return request.param


def autograd_reference(case, logits, labels):
    """The docs/methods.md expression with torch.amax, whose sub-gradient splits ties evenly."""
    hp = CASES[case]
    d = logits.amax(dim=1, keepdim=True) - logits
    ce = F.cross_entropy(logits, labels)
    if case == "mbls":
        return ce + hp["weight"] * F.relu(d - hp["margin"]).mean()
    if case == "cals-hr":
        return ce + (hp["lambda_init"] * F.relu(d - hp["margin"])).mean()
    lam = torch.full((logits.shape[1],), hp["lambda_init"], dtype=logits.dtype)
    rho = torch.full((logits.shape[1],), hp["rho_init"], dtype=logits.dtype)
    return ce + penalty_value(d / hp["margin"] - 1.0, rho, lam, hp["penalty"]).mean()


def tied_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 6, generator=g, dtype=torch.float64) * 4
    logits[0, 1] = logits[0, 4] = logits[0].max() + 1.0      # two-way tie at the max
    logits[1, :3] = logits[1].max() + 2.0                    # three-way tie
    logits[2] = 5.0                                          # all equal
    return logits, torch.randint(0, 6, (9,), generator=g)


@pytest.mark.parametrize("case", sorted(CASES))
def test_value_and_gradient_equal_plain_autograd_with_ties(case, path):
    logits, labels = tied_batch()
    method = create_method(case.split(":")[0], 6, **CASES[case])
    x = logits.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(method.loss(x, labels), x)
    y = logits.clone().requires_grad_(True)
    ref_loss = autograd_reference(case, y, labels)
    (want,) = torch.autograd.grad(ref_loss, y)
    assert float(method.loss(logits, labels)) == pytest.approx(float(ref_loss.detach()), abs=1e-12)
    assert torch.allclose(got, want, atol=1e-12)


def test_backward_twice_through_a_retained_graph_gives_the_same_gradient(path):
    logits, labels = tied_batch()
    x = logits.clone().requires_grad_(True)
    loss = create_method("cals-alm", 6, margin=3.0, lambda_init=0.5).loss(x, labels)
    (a,) = torch.autograd.grad(loss, x, retain_graph=True)
    (b,) = torch.autograd.grad(loss, x)
    assert torch.equal(a, b)


def test_gradient_keeps_the_input_dtype_under_bf16_autocast(path):
    layer = torch.nn.Linear(4, 6).to(torch.bfloat16)
    x = torch.randn(5, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = create_method("mbls", 6, margin=0.1).loss(layer(x), torch.arange(5))
    loss.backward()
    assert loss.dtype == torch.float32
    assert layer.weight.grad.dtype == torch.bfloat16 and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("lam", [1.0, 1e2, 1e4, 1e6])
def test_phr_value_in_float32_does_not_cancel_at_large_multipliers(lam, path):
    # (relu(lam + rho h)^2 - lam^2) / (2 rho) loses ~log10(lam) digits in float32 (rel. error
    # 3e-6 at lam = 1e2, 3e-2 at lam = 1e6); the value must stay within float32 rounding
    import numpy as np

    from .references.cals import alm_loss

    g = torch.Generator().manual_seed(int(lam))
    logits, labels = torch.randn(64, 20, generator=g) * 8, torch.randint(0, 20, (64,), generator=g)
    method = create_method("cals-alm", 20, lambda_init=lam, rho_init=3.0)
    got = float(method.loss(logits, labels))
    want = alm_loss(logits.double().numpy(), labels.numpy(), 10.0, np.full(20, lam), np.full(20, 3.0))
    assert got == pytest.approx(want, rel=5e-7)
