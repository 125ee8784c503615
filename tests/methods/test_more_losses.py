"""MDCA, DCA, dual focal, ACLS and the long-tail losses: what the registry-wide tests cannot say."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calbench.errors import ConfigError
from calbench.methods import create_method

from .references.core import softmax


def batch(n=32, k=10, scale=5.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=dtype) * scale, torch.randint(0, k, (n,), generator=g)


def test_acls_gradient_is_the_stop_gradient_derivative():
    """positive: 2 pos_lambda relu(l - m) / N on the max; negative: -2 neg_lambda relu(max - l - m) / (N (K-1))."""
    logits, y = batch(n=8, k=6, scale=12.0)
    margin, w, pos, neg = 4.0, 0.3, 1.5, 0.7
    method = create_method("acls", 6, margin=margin, weight=w, pos_lambda=pos, neg_lambda=neg)
    x = logits.clone().requires_grad_(True)
    method.loss(x, y).backward()
    l = logits.numpy()
    n, k = l.shape
    onehot = np.eye(k)[y.numpy()]
    is_max = l == l.max(axis=1, keepdims=True)
    reg = np.where(is_max, 2 * pos * np.maximum(l - margin, 0) / n,
                   -2 * neg * np.maximum(l.max(axis=1, keepdims=True) - l - margin, 0) / (n * (k - 1)))
    want = (softmax(l) - onehot) / n + w * reg
    assert np.allclose(x.grad.numpy(), want, rtol=1e-10, atol=1e-12)
    assert (reg != 0).sum() > n                          # both terms active in this batch


def test_acls_fused_path_equals_plain_autograd_with_ties():
    from calbench.methods.acls import acls_regulariser
    logits, y = batch(n=8, k=6, scale=12.0)
    logits[0, :2] = logits[0].max() + 1.0                # a tied maximum
    method = create_method("acls", 6, margin=2.0, weight=0.4)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    method.loss(a, y).backward()
    (F.cross_entropy(b, y) + 0.4 * acls_regulariser(b, 2.0, 1.0, 0.1)).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)


def test_dual_focal_runner_up_and_no_smaller_probability():
    method = create_method("dual-focal", 3, gamma=2.0)
    p = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2]], dtype=torch.float64)
    got = [float(method.loss(p[i:i + 1].log(), torch.tensor([0]))) for i in range(3)]
    # p_j: the runner-up 0.3; none below 0.1 -> 0; the tie 0.4 is not below, 0.2 is
    want = [-(1 - 0.6 + 0.3) ** 2 * np.log(0.6), -(1 - 0.1) ** 2 * np.log(0.1), -(1 - 0.4 + 0.2) ** 2 * np.log(0.4)]
    assert got == pytest.approx(want, rel=1e-12)


def test_dual_focal_is_above_focal_loss_with_the_same_gamma():
    logits, y = batch()
    assert float(create_method("dual-focal", 10, gamma=3.0).loss(logits, y)) > float(create_method("fl", 10, gamma=3.0).loss(logits, y))


def test_mdca_penalty_vanishes_when_mean_probabilities_equal_label_frequencies():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = torch.zeros(6, 3, dtype=torch.float64)       # uniform predictions, uniform labels
    assert float(create_method("mdca", 3).loss(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-15)
    with pytest.raises(ConfigError, match="mdca.base"):
        create_method("mdca", 3, base="brier")


def test_dca_gradient_flows_only_through_confidences():
    logits, y = batch(n=16, k=4)
    x = logits.clone().requires_grad_(True)
    (create_method("dca", 4, beta=2.0).loss(x, y) - F.cross_entropy(x, y)).backward()
    conf = softmax(logits.numpy()).max(axis=1)
    acc = (logits.argmax(1) == y).double().mean().item()
    p = softmax(logits.numpy())
    top = logits.argmax(1).numpy()
    # d/dl |mean conf - acc| = sign(.) * mean_i d p_i,top / dl_i = sign * p_top (e_top - p) / N
    want = np.sign(conf.mean() - acc) * 2.0 * p[np.arange(16), top][:, None] * (np.eye(4)[top] - p) / 16
    assert np.allclose(x.grad.numpy(), want, atol=1e-12)


def test_balanced_softmax_equals_logit_adjustment_at_tau_one():
    logits, y = batch()
    counts = torch.tensor([500, 300, 200, 100, 50, 30, 20, 10, 5, 1], dtype=torch.float64)
    la, bs = create_method("logit-adjust", 10), create_method("balanced-softmax", 10)
    la.set_class_counts(counts)
    bs.set_class_counts(counts)
    assert float(la.loss(logits, y)) == pytest.approx(float(bs.loss(logits, y)), rel=1e-12)
    assert float(la.loss(logits, y)) != pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-3)


@pytest.mark.parametrize("name", ["logit-adjust", "balanced-softmax"])
def test_long_tail_losses_are_cross_entropy_for_balanced_counts(name):
    logits, y = batch()
    method = create_method(name, 10)
    method.set_class_counts(torch.full((10,), 7.0))
    assert float(method.loss(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-12)


@pytest.mark.parametrize("name", ["logit-adjust", "balanced-softmax"])
def test_long_tail_losses_need_the_class_counts(name):
    method = create_method(name, 10)
    assert method.needs_class_counts
    with pytest.raises(ValueError, match="class counts were never given"):
        method.loss(*batch())


def test_logit_adjustment_treats_an_empty_class_as_one_sample():
    logits, y = batch(k=3)
    method = create_method("logit-adjust", 3)
    method.set_class_counts(torch.tensor([10.0, 0.0, 5.0]))
    loss = method.loss(logits, y)
    shift = torch.log(torch.tensor([10.0, 1.0, 5.0], dtype=torch.float64) / 16.0)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(float(F.cross_entropy(logits + shift, y)), rel=1e-12)
