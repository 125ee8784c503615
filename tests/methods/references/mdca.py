"""MDCA (base loss + beta (1/K) sum_k |mean_i p_ik - mean_i y_ik|) and DCA (CE + beta |mean conf - acc|)."""

import numpy as np

from .core import cross_entropy, log_softmax, reference, softmax, target_prob


def base_loss(logits, targets, base, gamma, alpha):
    if base == "ce":
        return cross_entropy(logits, targets)
    if base == "fl":
        p = target_prob(logits, targets)
        return (-(1 - p) ** gamma * np.log(p)).mean()
    lp = log_softmax(logits)        # ls: (1 - a) CE + a mean_k(-log p_k)
    return ((1 - alpha) * -lp[np.arange(len(targets)), targets] + alpha * (-lp).mean(axis=1)).mean()


@reference("mdca", cases=[{"beta": 5.0}, {"base": "fl", "gamma": 2.0}, {"base": "ls", "alpha": 0.2, "beta": 3.0}],
           reduces_to=[("ce", {"beta": 0.0}), ("fl", {"beta": 0.0, "base": "fl", "gamma": 3.0}),
                       ("ls", {"beta": 0.0, "base": "ls", "alpha": 0.05})])
def mdca(logits, targets, *, beta, base, gamma, alpha, **_):
    n, k = logits.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), targets] = 1.0
    penalty = np.mean([abs(softmax(logits)[:, c].mean() - onehot[:, c].mean()) for c in range(k)])
    return base_loss(logits, targets, base, gamma, alpha) + beta * penalty


@reference("dca", cases=[{"beta": 10.0}], reduces_to=[("ce", {"beta": 0.0})])
def dca(logits, targets, *, beta, **_):
    p = softmax(logits)
    accuracy = (p.argmax(axis=1) == targets).mean()
    return cross_entropy(logits, targets) + beta * abs(p.max(axis=1).mean() - accuracy)
