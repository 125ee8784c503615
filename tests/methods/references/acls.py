"""ACLS: CE + w [pos_lambda/N sum_{k = argmax} relu(l_k - m)^2 + neg_lambda/(N(K-1)) sum_{others} relu(max - l_k - m)^2]."""

from .core import cross_entropy, reference


@reference("acls", cases=[{"margin": 3.0, "weight": 0.5, "pos_lambda": 0.7, "neg_lambda": 2.0}, {"margin": -1.0}],
           reduces_to=[("ce", {"weight": 0.0})])
def acls(logits, targets, *, margin, weight, pos_lambda, neg_lambda, **_):
    n, k = logits.shape
    positive = negative = 0.0
    for row in logits:
        top = row.max()
        for value in row:
            if value == top:
                positive += max(value - margin, 0.0) ** 2
            else:
                negative += max(top - value - margin, 0.0) ** 2
    return cross_entropy(logits, targets) + weight * (pos_lambda * positive / n + neg_lambda * negative / (n * (k - 1)))
