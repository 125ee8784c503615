"""Registry-wide: a method saved after an epoch (state_dict -> torch.save -> torch.load with
weights_only=True, as checkpoints load) into a fresh instance continues exactly like one that was
never interrupted: the same losses, gradients, meta-step outputs, stats and state."""

import io

import pytest
import torch
from torch import nn

from calbench.methods import METHODS

from . import harness

K, STEPS, EPOCHS = 6, 3, 3


def head() -> nn.Module:
    torch.manual_seed(7)
    return nn.Linear(harness.FEATURES, K)


def fresh(name: str):
    torch.manual_seed(0)       # the engine seeds before building; lazy modules draw their init here
    return harness.build(name, K)


def one_step(method, epoch: int, step: int, classifier: nn.Module) -> list:
    """A training step's observable outputs: loss, gradient w.r.t. the logits, meta-step output."""
    b = harness.batch(method, 12, seed=100 * epoch + step, dtype=torch.float32)
    out = []
    if method.needs_meta_split:
        meta = harness.batch(method, 8, seed=10_000 + 100 * epoch + step, dtype=torch.float32)
        out.append(method.meta_step(head=classifier, features=b.features, targets=b.targets,
                                    meta_features=meta.features, meta_targets=meta.targets, lr=0.1))
    logits = b.logits.clone().requires_grad_(True)
    loss = b.loss(method, logits=logits)
    loss.backward()
    return out + [loss.detach(), logits.grad, method.stats()]


def one_epoch(method, epoch: int, classifier: nn.Module) -> list:
    record = [one_step(method, epoch, step, classifier) for step in range(STEPS)]
    g = torch.Generator().manual_seed(500 + epoch)
    val_logits = torch.randn(40, K, generator=g) * (4.0 + 4.0 * epoch)
    val_targets = torch.randint(0, K, (40,), generator=g)
    method.end_epoch(val_logits, val_targets, epoch)
    return record + [method.stats()]


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", METHODS.names())
def test_resumed_method_equals_an_uninterrupted_one(name):
    classifier = head()
    straight = fresh(name)
    want = [one_epoch(straight, epoch, classifier) for epoch in range(EPOCHS)]

    interrupted = fresh(name)
    one_epoch(interrupted, 0, classifier)
    saved = round_trip(interrupted.state_dict())
    torch.manual_seed(1)       # a resumed process draws differently: only the loaded state may count
    resumed = harness.build(name, K)
    resumed.load_state_dict(saved)
    assert_same(round_trip(resumed.state_dict()), saved, "state after loading")
    got = [one_epoch(resumed, epoch, classifier) for epoch in range(1, EPOCHS)]

    assert_same(got, want[1:], name)
    assert_same(resumed.state_dict(), straight.state_dict(), "final state")
