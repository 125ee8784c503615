"""calbench.engine.optim_step: zero_grad and step without torch's wrappers, bitwise torch's own."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from calbench.engine.optim_step import StepFunctions, direct_sgd_possible


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(model: nn.Module, optimizer, step, zero_grad, scheduler=None, steps: int = 25):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen)
        zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        step()
        if scheduler is not None:
            scheduler.step()


def _pair(**sgd):
    """(reference model + optimizer, fast-path model + optimizer) from the same initial weights."""
    ref = _model()
    fast = copy.deepcopy(ref)
    return (ref, torch.optim.SGD(ref.parameters(), **sgd)), (fast, torch.optim.SGD(fast.parameters(), **sgd))


@pytest.mark.parametrize("sgd", [
    dict(lr=0.1, momentum=0.9, weight_decay=5e-4),            # the quickstart's
    dict(lr=0.05),                                            # no momentum, no decay
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.1, momentum=0.5, dampening=0.1),
])
def test_direct_sgd_equals_torch_step_bitwise(sgd):
    (ref, ref_opt), (fast, fast_opt) = _pair(**sgd)
    ref_sched = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[10, 20], gamma=0.1)
    fast_sched = torch.optim.lr_scheduler.MultiStepLR(fast_opt, milestones=[10, 20], gamma=0.1)
    functions = StepFunctions(fast_opt)
    assert functions.direct
    _train(ref, ref_opt, ref_opt.step, lambda: ref_opt.zero_grad(set_to_none=True), ref_sched)
    _train(fast, fast_opt, functions.step, functions.zero_grad, fast_sched)
    for a, b in zip(ref.parameters(), fast.parameters()):
        assert torch.equal(a, b)
    ref_state, fast_state = ref_opt.state_dict(), fast_opt.state_dict()
    assert ref_state["param_groups"] == fast_state["param_groups"]
    assert ref_state["state"].keys() == fast_state["state"].keys()
    for k in ref_state["state"]:
        for name, value in ref_state["state"][k].items():
            other = fast_state["state"][k][name]
            assert (value is None and other is None) or torch.equal(value, other)
    assert ref_sched.state_dict() == fast_sched.state_dict()


def test_scheduler_sees_the_direct_step():
    """The scheduler's "step() before optimizer.step()" warning relies on a flag step() sets."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    functions = StepFunctions(opt)
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    functions.step()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()


def test_zero_grad_clears_every_parameter_of_every_group():
    model = _model()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None for p in model.parameters())
    StepFunctions(opt).zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_other_optimizers_and_settings_take_torch_step():
    model = _model()
    assert not direct_sgd_possible(torch.optim.Adam(model.parameters(), lr=1e-3))
    assert not direct_sgd_possible(torch.optim.SGD(model.parameters(), lr=0.1, foreach=True))
    assert not direct_sgd_possible(torch.optim.SGD(model.parameters(), lr=0.1, maximize=True))
    hooked = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked.register_step_post_hook(lambda *a: None)
    assert not direct_sgd_possible(hooked)
    calls = []
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    adam.register_step_post_hook(lambda *a: calls.append(1))
    functions = StepFunctions(adam)
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    functions.step()
    assert calls == [1]          # torch's own step ran, hooks included
