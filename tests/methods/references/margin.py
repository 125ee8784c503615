"""Margin-based label smoothing: CE + w mean_ik relu(d_ik - m)."""

import numpy as np

from .core import cross_entropy, distances, reference


@reference("mbls", cases=[{"margin": 4.0, "weight": 0.5}], reduces_to=[("ce", {"weight": 0.0})])
def mbls(logits, targets, *, margin, weight, **_):
    return cross_entropy(logits, targets) + weight * np.maximum(distances(logits) - margin, 0).mean()
