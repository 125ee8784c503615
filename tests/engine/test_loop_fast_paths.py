"""The engine's cheaper forms of per-epoch and per-step calls draw and compute what the originals did."""

from __future__ import annotations

import random

import numpy as np
import torch

from calbench.engine.batches import autocast
from calbench.engine.loop import seed_everything
from calbench.specs import TrainConfig


def _draws():
    return (torch.rand(5), torch.randperm(20), torch.randn(3, generator=None), np.random.rand(3), random.random())


def _same(a, b) -> bool:
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else np.array_equal(x, y) for x, y in zip(a, b))


def test_cpu_seeding_draws_what_torch_manual_seed_draws():
    for seed in (0, 7, 100_003 * 3 + 29, 2**40 + 5):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        reference = _draws()
        seed_everything(seed, torch.device("cpu"))
        fast = _draws()
        seed_everything(seed)            # no device: torch.manual_seed itself
        plain = _draws()
        assert _same(reference, fast) and _same(reference, plain)
        assert torch.initial_seed() == seed


def test_cpu_autocast_is_an_empty_context():
    cfg = TrainConfig(amp=True)
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu"), cfg):
        assert not torch.is_autocast_enabled("cpu")
        y = x @ x
    assert y.dtype == torch.float32 and torch.equal(y, x @ x)
