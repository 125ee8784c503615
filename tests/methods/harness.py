"""Build a method and one batch for it the way the engine would, for the registry-wide tests.

Whatever a method declares is provided: penultimate features (`needs_features`), the train class
counts (`needs_class_counts`, long-tailed), the batch transform (`transform_batch`, on stand-in
inputs with a seeded generator) and its `ctx`.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calbench.methods import check_hparams, create_method

FEATURES = 8


@dataclass
class Batch:
    logits: torch.Tensor          # (N, K) or (N, K, H, W)
    targets: torch.Tensor
    features: torch.Tensor | None
    ctx: Any

    def loss(self, method, logits=None):
        return method.loss(self.logits if logits is None else logits, self.targets,
                           features=self.features, ctx=self.ctx)


def class_counts(k: int) -> torch.Tensor:
    return torch.arange(k, 0, -1, dtype=torch.float64) * 3.0     # long-tailed: 3K, ..., 3


def build(name: str, k: int, hparams: dict | None = None):
    method = create_method(name, k, **(hparams or {}))
    if method.needs_class_counts:
        method.set_class_counts(class_counts(k))
    return method


def batch(method, n: int, seed: int, scale: float = 6.0, dtype=torch.float64, spatial=None) -> Batch:
    """Random logits for `n` samples (after the method's batch transform); `spatial=(H, W)` gives
    (N, K, H, W) segmentation logits with (N, D, H, W) features."""
    g = torch.Generator().manual_seed(seed)
    k = method.num_classes
    shape = (n,) if spatial is None else (n, *spatial)
    targets = torch.randint(0, k, shape, generator=g)
    inputs = torch.randn(n, 3, generator=g)
    inputs, targets, ctx = method.transform_batch(inputs, targets, g)
    n = inputs.shape[0]
    logits = torch.randn((n, k) + tuple(spatial or ()), generator=g, dtype=dtype) * scale
    features = None
    if method.needs_features:
        features = torch.randn((n, FEATURES) + tuple(spatial or ()), generator=g, dtype=dtype)
    return Batch(logits, targets, features, ctx)


def to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy() if value.is_floating_point() else value.cpu().numpy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    return value


def rows(array: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*H*W, C), as the template flattens."""
    return np.moveaxis(array, 1, -1).reshape(-1, array.shape[1]) if array.ndim > 2 else array


def expected(ref, method, b: Batch, hparams: dict) -> float:
    """The reference's value for `method` (already called once on `b`) on the batch's kept rows."""
    targets = b.targets.numpy().reshape(-1)
    keep = targets != method.ignore_index
    extras = {"state": to_numpy(method.state_dict()), "ctx": to_numpy(b.ctx)}
    if b.features is not None:
        extras["features"] = rows(to_numpy(b.features))[keep]
    if method.needs_class_counts:
        extras["class_counts"] = to_numpy(method.class_counts)
    full = check_hparams(method.name, hparams)
    return ref(rows(to_numpy(b.logits))[keep], targets[keep], full, **extras)
