"""AdaFocal at the method's current bins: gamma_b of p_y's bin; -(1 - p)^g log p for g >= 0, -(1 + p)^|g| log p below."""

import numpy as np

from .core import reference, target_prob


def bin_of(p, edges):
    """bin 0 below the first inner edge, the last at or above the last, else lower <= p < upper."""
    inner = edges[1:-1]
    return int(sum(p >= e for e in inner))


@reference("adafocal", cases=[{"gamma_initial": -1.5}, {"gamma_initial": 0.5, "num_bins": 4}],
           reduces_to=[("ce", {"gamma_initial": 0.0})])
def adafocal(logits, targets, *, state, **_):
    edges, gammas = state["edges"], state["gammas"]
    total = 0.0
    for p in target_prob(logits, targets):
        g = gammas[bin_of(p, edges)]
        weight = (1 - p) ** g if g >= 0 else (1 + p) ** (-g)
        total += -weight * np.log(p)
    return total / len(targets)
