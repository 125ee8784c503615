"""Focal loss -(1 - p_y)^g log p_y, and FLSD-53 (g = 5 below p_y 0.2, 3 below 0.5, else g)."""

import numpy as np

from .core import reference, target_prob


@reference("fl", cases=[{"gamma": 2.0}, {"gamma": 0.5}], reduces_to=[("ce", {"gamma": 0.0})])
def fl(logits, targets, *, gamma, **_):
    p = target_prob(logits, targets)
    return (-(1 - p) ** gamma * np.log(p)).mean()


@reference("flsd", cases=[{"gamma": 1.0}])
def flsd(logits, targets, *, gamma, **_):
    p = target_prob(logits, targets)
    g = np.where(p < 0.2, 5.0, np.where(p < 0.5, 3.0, gamma))
    return (-(1 - p) ** g * np.log(p)).mean()
