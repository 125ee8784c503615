"""Every loss equals an independent float64 expression of its METHODS.md formula, and is gradcheck-clean."""

import numpy as np
import pytest
import torch

from calbench.methods import METHODS, create_method, list_methods
from . import reference as ref

# name -> (hparams, reference(logits, labels, num_classes) in numpy float64)
CASES = {
    "ce": ({}, lambda l, y, k: ref.ce(l, y)),
    "ls": ({"alpha": 0.1}, lambda l, y, k: ref.ls(l, y, 0.1)),
    "fl": ({"gamma": 2.0}, lambda l, y, k: ref.fl(l, y, 2.0)),
    "flsd": ({"gamma": 3.0}, lambda l, y, k: ref.flsd(l, y, 3.0)),
    "ecp": ({"beta": 0.3}, lambda l, y, k: ref.ecp(l, y, 0.3)),
    "mmce": ({"weight": 2.0}, lambda l, y, k: ref.mmce(l, y, 2.0)),
    "cpc": ({}, lambda l, y, k: ref.cpc(l, y)),
    "mbls": ({"margin": 4.0, "weight": 0.5}, lambda l, y, k: ref.mbls(l, y, 4.0, 0.5)),
    "cals-hr": ({"margin": 4.0, "lambda_init": 0.3},
                lambda l, y, k: ref.cals_hr(l, y, np.full(k, 0.3), 4.0)),
    "cals-alm": ({"margin": 4.0, "lambda_init": 0.5, "rho_init": 2.0},
                 lambda l, y, k: ref.cals_alm(l, y, np.full(k, 0.5), np.full(k, 2.0), 4.0)),
}
for _pen in ("p2", "p3"):
    CASES[f"cals-alm:{_pen}"] = (
        {"margin": 4.0, "lambda_init": 0.5, "rho_init": 2.0, "penalty": _pen},
        lambda l, y, k, _pen=_pen: ref.cals_alm(l, y, np.full(k, 0.5), np.full(k, 2.0), 4.0, _pen))


def test_every_registered_loss_has_a_reference_case():
    covered = {c.split(":")[0] for c in CASES} | {"gammanet-sece"}  # gammanet: see test_gammanet.py
    assert set(list_methods()) <= covered


def make_batch(n, k, seed, scale=6.0, ignore_some=True, segmentation=False):
    g = torch.Generator().manual_seed(seed)
    if segmentation:
        logits = torch.randn(n, k, 3, 2, generator=g, dtype=torch.float64) * scale
        labels = torch.randint(0, k, (n, 3, 2), generator=g)
        if ignore_some:
            labels[0, 0, 0] = -100
            labels[-1, 2, 1] = -100
    else:
        logits = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
        labels = torch.randint(0, k, (n,), generator=g)
        if ignore_some:
            labels[::5] = -100
    return logits, labels


def build(case, k):
    name = case.split(":")[0]
    hparams, reference = CASES[case]
    return create_method(name, k, **hparams), reference


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("k,n", [(10, 24), (200, 6)])
def test_loss_equals_formula(case, k, n):
    method, reference = build(case, k)
    logits, labels = make_batch(n, k, seed=k + n)
    got = float(method.loss(logits, labels))
    l_np, y_np = ref.rows(logits.numpy(), labels.numpy())
    assert got == pytest.approx(reference(l_np, y_np, k), abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_segmentation_shapes_flatten_and_ignore(case):
    method, reference = build(case, 5)
    logits, labels = make_batch(4, 5, seed=3, segmentation=True)
    got = float(method.loss(logits, labels))
    l_np, y_np = ref.rows(logits.numpy(), labels.numpy())
    assert got == pytest.approx(reference(l_np, y_np, 5), abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_matches_float64(case):
    method, _ = build(case, 10)
    logits, labels = make_batch(16, 10, seed=5)
    assert float(method.loss(logits.float(), labels)) == pytest.approx(float(method.loss(logits, labels)), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcheck_float64(case):
    method, _ = build(case, 5)
    logits, labels = make_batch(6, 5, seed=11, scale=3.0)
    if case.startswith("cals") or case == "mbls":
        logits = logits * 2.5  # make some distances exceed the margin so the penalty is active
    # keep every logit away from ties (max / relu kinks), where finite differences are meaningless
    logits = logits + torch.arange(5, dtype=torch.float64) * 1e-2
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: method.loss(x, labels), (logits,), eps=1e-6, atol=1e-5)


def test_all_rows_ignored_gives_zero_with_a_graph():
    for name in list_methods():
        method = create_method(name, 4)
        logits = torch.randn(3, 4, requires_grad=True)
        loss = method.loss(logits, torch.full((3,), -100), features=torch.randn(3, 8))
        assert float(loss.detach()) == 0.0
        loss.backward()


def test_registry_entries_have_description_and_paper():
    for entry in METHODS.entries():
        assert entry.description and entry.paper
