"""Registry-wide: every registered method against its float64 reference (tests/methods/references/),
gradcheck, the empty batch, ignored rows, segmentation shapes, exact limits, extreme logits and
bfloat16 autocast. Nothing here names a method: a new one is picked up from the registry."""

import pytest
import torch

from calbench.methods import METHODS

from . import harness
from .references import REFERENCES

NAMES = METHODS.names()
CASES = [(name, i) for name in NAMES for i in range(1 + len(getattr(REFERENCES.get(name), "cases", ())))]


def case_hparams(name: str, index: int) -> dict:
    return {} if index == 0 else dict(REFERENCES[name].cases[index - 1])


def case_id(case):
    return f"{case[0]}-{'defaults' if case[1] == 0 else f'case{case[1]}'}"


def test_every_registered_method_has_a_reference_and_every_reference_a_method():
    missing = [name for name in NAMES if name not in REFERENCES]
    assert not missing, f"methods without a reference under tests/methods/references/: {missing}"
    stale = [name for name in REFERENCES if name not in METHODS]
    assert not stale, f"references of no registered method: {stale}"


def check_value(name, hparams, b, method, rel=1e-6):
    got = float(b.loss(method).detach())
    want = harness.expected(REFERENCES[name], method, b, hparams)
    assert got == pytest.approx(want, rel=rel, abs=1e-9), (got, want)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("k,n", [(10, 24), (200, 6)])
def test_value_equals_the_reference(case, k, n):
    name, index = case
    hparams = case_hparams(name, index)
    method = harness.build(name, k, hparams)
    check_value(name, hparams, harness.batch(method, n, seed=k + n + index), method)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ignored_rows_are_dropped(case):
    name, index = case
    hparams = case_hparams(name, index)
    method = harness.build(name, 7, hparams)
    b = harness.batch(method, 20, seed=1)
    if b.ctx is not None:
        pytest.skip("batch method: its ctx describes whole samples, none of which is ignored")
    b.targets[::4] = method.ignore_index
    check_value(name, hparams, b, method)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_segmentation_rows_flatten_and_ignore(case):
    name, index = case
    hparams = case_hparams(name, index)
    method = harness.build(name, 5, hparams)
    b = harness.batch(method, 4, seed=3, spatial=(3, 2))
    if b.ctx is not None:
        pytest.skip("batch method: mixes whole samples, not pixels")
    b.targets[0, 0, 0] = b.targets[-1, 2, 1] = method.ignore_index
    check_value(name, hparams, b, method)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_matches_float64(case):
    name, index = case
    method = harness.build(name, 10, case_hparams(name, index))
    b = harness.batch(method, 16, seed=5)
    want = float(b.loss(method))
    got = float(b.loss(method, logits=b.logits.float()))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck_float64(case):
    name, index = case
    method = harness.build(name, 5, case_hparams(name, index))
    if getattr(method, "stops_gradient", False):
        pytest.skip("the loss stops the gradient through a term by design (its own test checks the gradient)")
    b = harness.batch(method, 6, seed=11, scale=7.5)   # large enough for margin penalties to act
    # keep every logit away from ties (max / relu kinks), where finite differences are meaningless
    logits = (b.logits + torch.arange(5, dtype=torch.float64) * 1e-2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: b.loss(method, logits=x), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_an_all_ignored_batch_gives_zero_with_a_graph(name):
    method = harness.build(name, 4)
    b = harness.batch(method, 3, seed=0, dtype=torch.float32)
    b.targets.fill_(method.ignore_index)
    logits = b.logits.clone().requires_grad_(True)
    loss = b.loss(method, logits=logits)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


LIMITS = [(name, other, hp) for name in NAMES if name in REFERENCES for other, hp in REFERENCES[name].reduces_to]


@pytest.mark.parametrize("name,other,hparams", LIMITS, ids=[f"{a}->{b}" for a, b, _ in LIMITS])
def test_limits_equal_the_simpler_loss_exactly(name, other, hparams):
    method = harness.build(name, 10, hparams)
    b = harness.batch(method, 32, seed=0, scale=8.0, dtype=torch.float32)
    assert torch.equal(b.loss(method), b.loss(harness.build(other, 10)))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "ce"])
def test_defaults_differ_from_cross_entropy(name):
    method = harness.build(name, 10)
    b = harness.batch(method, 32, seed=0, scale=8.0, dtype=torch.float32)
    assert not torch.equal(b.loss(method), harness.build("ce", 10).loss(b.logits, b.targets))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_finite_and_differentiable_at_extreme_logits(name, extreme):
    method = harness.build(name, 10)
    b = harness.batch(method, 16, seed=0, dtype=torch.float32)
    logits = (b.logits.sign() * extreme).requires_grad_(True)
    loss = b.loss(method, logits=logits)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_finite_under_bfloat16_autocast(name):
    method = harness.build(name, 10)
    b = harness.batch(method, 16, seed=0, dtype=torch.float32)
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 10)
    x = torch.randn(b.logits.shape[0], 12) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        loss = method.loss(logits, b.targets, features=None if b.features is None else x, ctx=b.ctx)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
