"""CALS-ALM and CALS-HR updates against values worked out by hand from Algorithm 2 and eq. (15)."""

import io

import pytest
import torch

from calbench.methods import create_method
from calbench.methods.cals import penalty_derivative, penalty_value

# Validation batch, margin 10:
#   row 1 logits [10, 0, -10] -> d = [0, 10, 20] -> z = d/10 - 1 = [-1, 0, 1]
#   row 2 logits [0, 20, 0]   -> d = [20, 0, 20] -> z = [1, -1, 1]
VAL_LOGITS = torch.tensor([[10.0, 0.0, -10.0], [0.0, 20.0, 0.0]])
VAL_LABELS = torch.tensor([0, 1])


def alm(**kw):
    return create_method("cals-alm", 3, **kw)


def test_first_update_by_hand():
    m = alm()
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=0)
    # PHR: P'(z) = max(0, lam + rho z), lam = 1e-6, rho = 1, each P' clamped to [1e-6, 1e6]:
    #   class 0: z = -1, 1 -> P' = 0 -> 1e-6, 1.000001        -> mean 0.500001
    #   class 1: z = 0, -1 -> P' = 1e-6, 0 -> 1e-6            -> mean 1e-6
    #   class 2: z = 1, 1  -> 1.000001, 1.000001             -> mean 1.000001
    assert m.multipliers.tolist() == pytest.approx([0.500001, 1e-6, 1.000001], rel=1e-12)
    assert m.penalties.tolist() == [1.0, 1.0, 1.0]      # no previous constraint yet
    assert m.stats()["lambda_max"] == pytest.approx(1.000001)


def test_second_update_uses_the_new_multipliers():
    m = alm()
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=0)
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=1)
    #   class 0: lam = 0.500001: P'(-1) = 0 -> 1e-6; P'(1) = 1.500001 -> mean 0.750001
    #   class 1: unchanged 1e-6
    #   class 2: lam = 1.000001: P'(1) = 2.000001 twice -> 2.000001
    assert m.multipliers.tolist() == pytest.approx([0.750001, 1e-6, 2.000001], rel=1e-12)


def test_rho_grows_only_at_the_tenth_epoch_where_the_constraint_did_not_improve():
    m = alm()
    for epoch in range(9):
        m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=epoch)
        assert m.penalties.tolist() == [1.0, 1.0, 1.0], epoch
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=9)
    # mean constraints c = [0, -0.5, 1], unchanged from the previous epoch:
    #   class 0: 0 > 0.9 * max(0, 0) = 0 is false -> rho stays 1
    #   class 1: -0.5 > 0 false -> stays 1;  class 2: 1 > 0.9 -> rho = 1.2
    assert m.penalties.tolist() == pytest.approx([1.0, 1.0, 1.2])
    # multipliers after 10 updates (rho = 1 throughout, since P' uses the old rho):
    #   class 0: lam <- (1e-6 + lam + 1) / 2 from 1e-6 -> 1.000001 - 2**-10
    #   class 2: lam <- lam + 1 each epoch            -> 10.000001
    assert m.multipliers.tolist() == pytest.approx([1.000001 - 2 ** -10, 1e-6, 10.000001], rel=1e-12)


def test_both_clamps():
    m = alm(lambda_max=0.8, rho_init=9.0, rho_step=1)
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=0)
    # every P' above lambda_max = 0.8 is clamped before the mean:
    #   class 0: (1e-6 + 0.8) / 2 = 0.4000005;  class 2: (0.8 + 0.8) / 2 = 0.8
    assert m.multipliers.tolist() == pytest.approx([0.4000005, 1e-6, 0.8], rel=1e-12)
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=1)
    # class 2: rho 9 * 1.2 = 10.8 -> clamped to rho_max = 10; the others stay at 9
    assert m.penalties.tolist() == pytest.approx([9.0, 9.0, 10.0])


def test_state_survives_save_and_load():
    m = alm()
    for epoch in range(10):
        m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=epoch)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = alm()
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.multipliers, m.multipliers)
    assert torch.equal(fresh.penalties, m.penalties)
    assert torch.equal(fresh.prev_constraint, m.prev_constraint)
    assert bool(fresh.has_prev)
    logits = torch.randn(5, 3) * 20
    labels = torch.randint(0, 3, (5,))
    assert torch.equal(fresh.loss(logits, labels), m.loss(logits, labels))


def test_ignored_validation_rows_are_dropped():
    m, ref = alm(), alm()
    logits = torch.cat([VAL_LOGITS, torch.tensor([[99.0, -99.0, 0.0]])])
    labels = torch.tensor([0, 1, -100])
    m.end_epoch(logits, labels, epoch=0)
    ref.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=0)
    assert torch.equal(m.multipliers, ref.multipliers)


@pytest.mark.parametrize("kind", ["phr", "p2", "p3"])
def test_penalty_derivative_is_the_derivative_of_the_penalty(kind):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_(True)
    rho, lam = torch.tensor(1.7, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(penalty_value(z, rho, lam, kind).sum(), z)
    assert torch.allclose(grad, penalty_derivative(z.detach(), rho, lam, kind), atol=1e-12)
    assert float(penalty_derivative(torch.zeros(1, dtype=torch.float64), rho, lam, kind)) == pytest.approx(0.3)


def test_unknown_penalty_is_an_error():
    with pytest.raises(ValueError, match="phr"):
        alm(penalty="p4")


def test_cals_hr_rule_by_hand():
    m = create_method("cals-hr", 3, margin=10.0, lambda_init=0.1, mu=2.0, tau=1.1)
    # mean relu(d - 10) per class: epoch 0 logits -> d = [0,10,20],[20,0,20] -> [5, 0, 10]
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=0)
    assert m.multipliers.tolist() == pytest.approx([0.1, 0.1, 0.1])
    # epoch 1 with doubled logits: d doubles -> relu(d - 10) = [0,10,30],[30,0,30] -> [15, 5, 30]
    m.end_epoch(VAL_LOGITS * 2, VAL_LABELS, epoch=1)
    # class 0: 15 > 1.1 * 5 -> x2; class 1: 5 > 1.1 * 0 -> x2; class 2: 30 > 11 -> x2
    assert m.multipliers.tolist() == pytest.approx([0.2, 0.2, 0.2])
    # epoch 2 back to the original logits: [5, 0, 10] vs old [15, 5, 30] -> old > 1.1 new -> /2
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=2)
    assert m.multipliers.tolist() == pytest.approx([0.1, 0.1, 0.1])
    # epoch 3 unchanged logits: neither condition holds -> unchanged
    m.end_epoch(VAL_LOGITS, VAL_LABELS, epoch=3)
    assert m.multipliers.tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert set(m.stats()) >= {"lambda_min", "lambda_mean", "lambda_max"}


def test_cals_hr_with_constant_multipliers_equals_mbls():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(32, 10, generator=g) * 12, torch.randint(0, 10, (32,), generator=g)
    hr = create_method("cals-hr", 10, margin=10.0, lambda_init=0.1)
    mbls = create_method("mbls", 10, margin=10.0, weight=0.1)
    assert torch.allclose(hr.loss(logits, labels), mbls.loss(logits, labels), rtol=0, atol=1e-7)
    assert float(mbls.loss(logits, labels)) > float(create_method("ce", 10).loss(logits, labels))
