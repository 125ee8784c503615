"""Cross-entropy plus an explicit penalty: ECP, MMCE, CPC."""

import numpy as np

from .core import cross_entropy, log_sigmoid, reference, softmax


@reference("ecp", cases=[{"beta": 0.3}], reduces_to=[("ce", {"beta": 0.0})])
def ecp(logits, targets, *, beta, **_):
    p = np.clip(softmax(logits), 1e-10, 1 - 1e-10)
    return cross_entropy(logits, targets) - beta * (-p * np.log(p)).mean()


@reference("mmce", cases=[{"weight": 2.0, "bandwidth": 0.2}], reduces_to=[("ce", {"weight": 0.0})])
def mmce(logits, targets, *, weight, bandwidth, **_):
    p = softmax(logits)
    r = p.max(axis=1)
    c = (p.argmax(axis=1) == targets).astype(float)
    n = len(targets)
    total = 0.0
    for i in range(n):
        for j in range(n):
            total += (c[i] - r[i]) * (c[j] - r[j]) * np.exp(-abs(r[i] - r[j]) / bandwidth)
    return cross_entropy(logits, targets) + weight * total / n ** 2


@reference("cpc", cases=[{"w_bd": 0.1, "w_be": 2.0}], reduces_to=[("ce", {"w_bd": 0.0, "w_be": 0.0})])
def cpc(logits, targets, *, w_bd, w_be, **_):
    n, k = logits.shape
    bd = be = 0.0
    for i in range(n):
        others = [a for a in range(k) if a != targets[i]]
        row = logits[i]
        bd += sum(log_sigmoid(row[targets[i]] - row[a]) for a in others)
        pair = log_sigmoid(row[others][:, None] - row[others][None, :])   # (j, k) over j, k != y
        be += 0.5 * (pair.sum() - np.trace(pair))
    bd = -bd / (n * (k - 1))
    be = -be / (n * (k - 1) * (k - 2)) if k > 2 else 0.0
    return cross_entropy(logits, targets) + w_bd * bd + w_be * be
