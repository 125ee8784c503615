"""Logit adjustment CE(l + tau log pi) and balanced softmax -log[n_y e^{l_y} / sum_k n_k e^{l_k}]."""

import numpy as np

from .core import cross_entropy, reference


@reference("logit-adjust", cases=[{"tau": 2.0}, {"tau": 0.5}], reduces_to=[("ce", {"tau": 0.0})])
def logit_adjust(logits, targets, *, tau, class_counts, **_):
    prior = class_counts / class_counts.sum()
    return cross_entropy(logits + tau * np.log(prior), targets)


@reference("balanced-softmax")
def balanced_softmax(logits, targets, *, class_counts, **_):
    weighted = class_counts * np.exp(logits - logits.max(axis=1, keepdims=True))
    return -np.log(weighted[np.arange(len(targets)), targets] / weighted.sum(axis=1)).mean()
