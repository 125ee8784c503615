"""Gamma-net + SECE: focal loss with gamma_i = gamma_max sigmoid((w . f_i + b) / t) from the features."""

import numpy as np

from .core import reference, target_prob


@reference("gammanet-sece", cases=[{"gamma_max": 4.0, "temperature": 2.0}])
def gammanet_sece(logits, targets, *, gamma_max, temperature, features, state, **_):
    score = features @ state["gamma_net.weight"][0] + state["gamma_net.bias"][0]
    gamma = gamma_max / (1.0 + np.exp(-score / temperature))
    p = target_prob(logits, targets)
    return (-np.maximum(1 - p, 1e-6) ** gamma * np.log(p)).mean()
