"""Limits that reduce to cross-entropy, CALS-HR vs MbLS, and finiteness at extreme logits / bf16."""

import pytest
import torch

from calbench.methods import create_method, list_methods


def batch(n=32, k=10, scale=8.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * scale, torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("name,hparams", [
    ("ls", {"alpha": 0.0}), ("fl", {"gamma": 0.0}), ("ecp", {"beta": 0.0}),
    ("mmce", {"weight": 0.0}), ("mbls", {"weight": 0.0}), ("cpc", {"w_bd": 0.0, "w_be": 0.0}),
])
def test_zero_weight_limits_equal_cross_entropy_exactly(name, hparams):
    logits, labels = batch()
    ce = create_method("ce", 10).loss(logits, labels)
    assert torch.equal(create_method(name, 10, **hparams).loss(logits, labels), ce)


def test_nonzero_weights_differ_from_cross_entropy():
    logits, labels = batch()
    ce = create_method("ce", 10).loss(logits, labels)
    for name in ["ls", "fl", "flsd", "ecp", "mmce", "cpc", "mbls", "cals-hr", "cals-alm"]:
        assert not torch.equal(create_method(name, 10).loss(logits, labels), ce), name


def test_cals_hr_with_constant_multipliers_equals_mbls():
    logits, labels = batch(scale=12.0)
    hr = create_method("cals-hr", 10, margin=10.0, lambda_init=0.1)
    mbls = create_method("mbls", 10, margin=10.0, weight=0.1)
    assert torch.allclose(hr.loss(logits, labels), mbls.loss(logits, labels), rtol=0, atol=1e-7)
    assert float(mbls.loss(logits, labels)) > float(create_method("ce", 10).loss(logits, labels))


def make(name, k):
    return create_method(name, k)


@pytest.mark.parametrize("name", list_methods())
@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_finite_and_differentiable_at_extreme_logits(name, extreme):
    torch.manual_seed(0)
    logits = (torch.randn(16, 10).sign() * extreme).requires_grad_(True)
    labels = torch.randint(0, 10, (16,))
    features = torch.randn(16, 8)
    loss = make(name, 10).loss(logits, labels, features=features)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", list_methods())
def test_finite_under_bfloat16_autocast(name):
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 10)
    x = torch.randn(16, 12) * 50
    labels = torch.randint(0, 10, (16,))
    method = make(name, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        loss = method.loss(logits, labels, features=x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
