"""gammanet-sece: focal loss with per-sample gammas; the meta step trains only the gamma-net."""

import pytest
import torch
from torch import nn

from calbench.methods import create_method
from calbench.methods.focal import focal_loss
from calbench.methods.gammanet import sece


def test_loss_is_focal_with_the_gamma_net_gammas():
    torch.manual_seed(0)
    m = create_method("gammanet-sece", 5, gamma_max=4.0, temperature=2.0)
    features, logits = torch.randn(12, 7), torch.randn(12, 5) * 3
    labels = torch.randint(0, 5, (12,))
    got = m.loss(logits, labels, features=features)
    with torch.no_grad():
        score = m.gamma_net(features).squeeze(1)
    gammas = 4.0 * torch.sigmoid(score / 2.0)
    assert ((gammas > 0) & (gammas < 4.0)).all()
    assert torch.allclose(got, focal_loss(logits, labels, gammas), atol=1e-7)


def test_meta_step_updates_the_gamma_net_but_not_the_head():
    torch.manual_seed(0)
    m = create_method("gammanet-sece", 5)
    head = nn.Linear(7, 5)
    before_head = [p.detach().clone() for p in head.parameters()]
    features, labels = torch.randn(32, 7), torch.randint(0, 5, (32,))
    meta_f, meta_y = torch.randn(16, 7), torch.randint(0, 5, (16,))
    m.loss(head(features), labels, features=features)
    before_gamma = [p.detach().clone() for p in m.extra_parameters()]
    out = m.meta_step(head=head, features=features, targets=labels, meta_features=meta_f,
                      meta_targets=meta_y, lr=0.5)
    assert "meta_sece" in out
    assert any(not torch.equal(a, b) for a, b in zip(before_gamma, m.extra_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before_head, head.parameters()))
    assert all(p.grad is None for p in head.parameters())


def test_meta_step_with_segmentation_features_and_ignore_index():
    torch.manual_seed(0)
    m = create_method("gammanet-sece", 4, ignore_index=255)
    head = nn.Conv2d(6, 4, 1)
    features = torch.randn(2, 6, 3, 3)
    labels = torch.randint(0, 4, (2, 3, 3))
    labels[0, 0, 0] = 255
    loss = m.loss(head(features), labels, features=features)
    assert torch.isfinite(loss)
    m.meta_step(head=head, features=features, targets=labels, meta_features=features,
                meta_targets=labels, lr=0.1)


def test_sece_by_hand():
    # two samples, confidences far apart (kernel ~ 0 between them): acc_hat_i = c_i
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    labels = torch.tensor([0, 0])  # first correct (r=0.9, c=1), second wrong (r=0.7, c=0)
    assert float(sece(probs, labels)) == pytest.approx(((1 - 0.9) + 0.7) / 2)


def test_meta_step_stays_finite_with_small_gammas_and_saturated_probabilities():
    # gammas << 1 and p_y rounding to 1: x^gamma has unbounded first and second derivatives at
    # x = 1 - p_y = 0; the loss must floor x so the meta step (a second-order step) stays finite
    torch.manual_seed(0)
    m = create_method("gammanet-sece", 3)
    head = nn.Linear(4, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4) * 200.0)
    features = torch.eye(4)[:3].repeat(4, 1)
    labels = torch.arange(3).repeat(4)
    m.loss(head(features), labels, features=features)
    with torch.no_grad():
        m.gamma_net.bias.fill_(-8.0)          # gammas ~ 5 * sigmoid(-8) ~ 0.0017
    m.meta_step(head=head, features=features, targets=labels, meta_features=features,
                meta_targets=labels, lr=0.1)
    assert all(torch.isfinite(p).all() for p in m.extra_parameters())
    logits = head(features).detach().requires_grad_(True)
    m.loss(logits, labels, features=features).backward()
    assert torch.isfinite(logits.grad).all()
