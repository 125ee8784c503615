"""Batch methods (mixup, regmixup, rankmixup, rankmixup-mrl): the mixing comes only from the
engine's generator (so a resumed run mixes identically), the transformed batch's layout, and the
limits that the registry-wide tests cannot state (CE on the clean rows only)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calbench.methods import METHODS, create_method

BATCH_METHODS = [name for name in METHODS.names()
                 if METHODS.get(name).transform_batch is not METHODS.get("ce").transform_batch]
COPIES = {"mixup": 1, "regmixup": 2, "rankmixup": 4, "rankmixup-mrl": 2}   # rows per sample after the transform


def inputs(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_the_batch_methods_are_found_from_the_registry():
    assert set(COPIES) <= set(BATCH_METHODS), BATCH_METHODS


@pytest.mark.parametrize("name", BATCH_METHODS)
def test_same_generator_state_gives_the_same_mixing_after_a_resume(name):
    method = create_method(name, 5)
    x, y = inputs()
    g = torch.Generator().manual_seed(123)
    method.transform_batch(x, y, g)                     # the epoch's first batch, before the "kill"
    saved = g.get_state()
    uninterrupted = [method.transform_batch(x, y, g) for _ in range(3)]
    resumed_gen = torch.Generator()
    resumed_gen.set_state(saved)
    torch.manual_seed(999)                              # the global stream must not matter
    np.random.seed(999)
    resumed = [create_method(name, 5).transform_batch(x, y, resumed_gen) for _ in range(3)]
    for (xa, ya, ca), (xb, yb, cb) in zip(uninterrupted, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(ca["lam"], cb["lam"]) and torch.equal(ca["perm"], cb["perm"])
    assert not torch.equal(uninterrupted[0][0], uninterrupted[1][0])   # successive batches differ


@pytest.mark.parametrize("name", BATCH_METHODS)
def test_transformed_batch_layout(name):
    method = create_method(name, 5)
    x, y = inputs()
    mixed_x, mixed_y, ctx = method.transform_batch(x, y, torch.Generator().manual_seed(0))
    assert mixed_x.shape == (COPIES[name] * 16, 3, 4, 4)
    assert torch.equal(mixed_y, y.repeat(COPIES[name]))
    lams = ctx["lam"].reshape(-1)
    perms = ctx["perm"].reshape(-1, 16)
    assert ((lams > 0) & (lams < 1)).all()
    for perm in perms:
        assert torch.equal(perm.sort().values, torch.arange(16))
    first_mixed = mixed_x[16:32] if COPIES[name] > 1 else mixed_x
    if COPIES[name] > 1:
        assert torch.equal(mixed_x[:16], x)                            # the clean rows come first
    want = float(lams[0]) * x + (1 - float(lams[0])) * x[perms[0]]
    assert torch.allclose(first_mixed, want, atol=1e-6)


@pytest.mark.parametrize("name", ["mixup", "regmixup"])
def test_alpha_zero_leaves_the_inputs_unmixed(name):
    x, y = inputs()
    mixed_x, _, ctx = create_method(name, 5, alpha=0.0).transform_batch(x, y, torch.Generator().manual_seed(0))
    assert float(ctx["lam"]) == 1.0
    assert torch.equal(mixed_x, x.repeat(COPIES[name], 1, 1, 1))


def test_mixing_weights_follow_the_beta_distribution():
    method = create_method("mixup", 5, alpha=0.4)
    x, y = inputs()
    g = torch.Generator().manual_seed(0)
    lams = np.array([float(method.transform_batch(x, y, g)[2]["lam"]) for _ in range(4000)])
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 * 0.4 + 1)) = 0.1389
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 1 / 7.2) < 0.01


@pytest.mark.parametrize("name", ["rankmixup", "rankmixup-mrl"])
def test_rankmixup_weight_zero_is_cross_entropy_on_the_clean_rows_exactly(name):
    method = create_method(name, 5, weight=0.0)
    x, y = inputs()
    _, targets, ctx = method.transform_batch(x, y, torch.Generator().manual_seed(0))
    logits = torch.randn(targets.shape[0], 5) * 4
    assert torch.equal(method.loss(logits, targets, ctx=ctx), F.cross_entropy(logits[:16], y))
    assert not torch.equal(create_method(name, 5).loss(logits, targets, ctx=ctx), F.cross_entropy(logits[:16], y))


def test_regmixup_at_eta_one_is_the_authors_mean_over_both_halves():
    method = create_method("regmixup", 5)
    x, y = inputs()
    _, targets, ctx = method.transform_batch(x, y, torch.Generator().manual_seed(1))
    lam, perm = float(ctx["lam"]), ctx["perm"]
    logits = torch.randn(32, 5, dtype=torch.float64) * 3
    partner = torch.cat([y, y[perm]])
    authors = lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(logits, partner)
    assert float(method.loss(logits, targets, ctx=ctx)) == pytest.approx(float(authors), rel=1e-12)


def test_mrl_masks_same_class_pairs():
    method = create_method("rankmixup-mrl", 3, margin=1.0, weight=1.0)
    x = torch.randn(4, 2)
    y = torch.tensor([0, 0, 1, 2])
    ctx = {"lam": torch.tensor([0.7], dtype=torch.float64), "perm": torch.tensor([[1, 0, 3, 2]])}
    clean = torch.zeros(4, 3)
    mixed = torch.full((4, 3), 5.0)               # every mixed sample far more confident: all violate
    logits = torch.cat([clean, mixed])
    loss = method.loss(logits, torch.cat([y, y]), ctx=ctx) - F.cross_entropy(clean, y)
    assert float(loss) == pytest.approx(2 * (5.0 + 1.0) / 4)      # rows 2, 3 mix two classes; 0, 1 do not


@pytest.mark.parametrize("name", BATCH_METHODS)
def test_without_ctx_the_loss_is_cross_entropy(name):
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert torch.equal(create_method(name, 5).loss(logits, y), F.cross_entropy(logits, y))


@pytest.mark.parametrize("name", BATCH_METHODS)
def test_ignored_rows_in_a_mixed_batch_are_an_error(name):
    method = create_method(name, 5)
    x, y = inputs()
    _, targets, ctx = method.transform_batch(x, y, torch.Generator().manual_seed(0))
    targets = targets.clone()
    targets[0] = method.ignore_index
    with pytest.raises(ValueError, match="whole samples"):
        method.loss(torch.randn(targets.shape[0], 5), targets, ctx=ctx)
