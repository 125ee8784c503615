"""Mixup lam CE(y) + (1 - lam) CE(y_pi), and RegMixup (CE(clean) + eta mixup-CE) / (1 + eta) on [x; x~]."""

from .core import log_softmax, reference


def mixed_ce_rows(logits, targets, partners, lam):
    lp = log_softmax(logits)
    return [-(lam * lp[i, a] + (1 - lam) * lp[i, b]) for i, (a, b) in enumerate(zip(targets, partners))]


@reference("mixup", cases=[{"alpha": 0.3}], reduces_to=[("ce", {"alpha": 0.0})])
def mixup(logits, targets, *, ctx, **_):
    lam, perm = float(ctx["lam"]), ctx["perm"]
    rows = mixed_ce_rows(logits, targets, [targets[j] for j in perm], lam)
    return sum(rows) / len(rows)


@reference("regmixup", cases=[{"alpha": 1.0, "beta": 2.0, "eta": 0.5}], reduces_to=[("ce", {"alpha": 0.0})])
def regmixup(logits, targets, *, eta, ctx, **_):
    lam, perm = float(ctx["lam"]), ctx["perm"]
    n = len(perm)
    clean = mixed_ce_rows(logits[:n], targets[:n], targets[:n], 1.0)
    mixed = mixed_ce_rows(logits[n:], targets[n:], [targets[j] for j in perm], lam)
    return (sum(clean) + eta * sum(mixed)) / (n * (1 + eta))
