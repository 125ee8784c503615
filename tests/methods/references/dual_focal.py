"""Dual focal loss: -(1 - p_y + p_j)^g log p_y, p_j the largest probability strictly below p_y (0 if none)."""

import numpy as np

from .core import reference, softmax


@reference("dual-focal", cases=[{"gamma": 2.0}, {"gamma": 0.5}], reduces_to=[("ce", {"gamma": 0.0})])
def dual_focal(logits, targets, *, gamma, **_):
    p = softmax(logits)
    total = 0.0
    for row, y in zip(p, targets):
        below = [q for q in row if q < row[y]]
        p_j = max(below) if below else 0.0
        total += -(1 - row[y] + p_j) ** gamma * np.log(row[y])
    return total / len(targets)
