"""RankMixup: CE on the clean rows + weight x (M-NDCG: mean 1 - NDCG of confidences; MRL: margin ranking of max logits)."""

import numpy as np

from .core import cross_entropy, reference, softmax


def relevance(targets, lam, perm_row, i):
    return 1.0 if targets[perm_row[i]] == targets[i] else max(lam, 1 - lam)


@reference("rankmixup", cases=[{"copies": 1, "alpha": 0.5}, {"copies": 4, "weight": 1.0}])
def rankmixup(logits, targets, *, weight, copies, ctx, **_):
    lams, perms = ctx["lam"], ctx["perm"]
    n = perms.shape[1]
    conf = softmax(logits).max(axis=1)
    total = 0.0
    for i in range(n):
        items = [(relevance(targets, lams[m], perms[m], i), conf[(m + 1) * n + i]) for m in range(copies)]
        items = sorted(items, key=lambda item: -item[0])       # Python's sort is stable
        gains = [1.0] + [r for r, _ in items]
        scores = [conf[i]] + [s for _, s in items]
        dcg = sum(s / np.log2(r + 2) for r, s in enumerate(scores))
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        total += 1 - (dcg / idcg if idcg > dcg else idcg / dcg)
    return cross_entropy(logits[:n], targets[:n]) + weight * total / n


@reference("rankmixup-mrl", cases=[{"margin": 0.5, "weight": 1.0, "alpha": 1.0}])
def rankmixup_mrl(logits, targets, *, weight, margin, ctx, **_):
    lam, perm = float(ctx["lam"][0]), ctx["perm"][0]
    n = len(perm)
    total = 0.0
    for i in range(n):
        if relevance(targets, lam, perm, i) < 1.0:
            total += max(logits[n + i].max() - logits[i].max() + margin, 0.0)
    return cross_entropy(logits[:n], targets[:n]) + weight * total / n
