"""Independent float64 numpy expressions of the METHODS.md formulas, written without calbench code."""

import numpy as np


def softmax(l):
    e = np.exp(l - l.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(l):
    s = l - l.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def rows(l, y, ignore=-100):
    if l.ndim == 4:
        k = l.shape[1]
        l = np.moveaxis(l, 1, -1).reshape(-1, k)
        y = y.reshape(-1)
    keep = y != ignore
    return l[keep], y[keep]


def ce(l, y):
    lp = log_softmax(l)
    return -lp[np.arange(len(y)), y].mean()


def ls(l, y, alpha=0.05):
    lp = log_softmax(l)
    n = len(y)
    return ((1 - alpha) * -lp[np.arange(n), y] + alpha * (-lp).mean(axis=1)).mean()


def fl(l, y, gamma=3.0):
    p = softmax(l)[np.arange(len(y)), y]
    return (-(1 - p) ** gamma * np.log(p)).mean()


def flsd(l, y, gamma=3.0):
    p = softmax(l)[np.arange(len(y)), y]
    g = np.where(p < 0.2, 5.0, np.where(p < 0.5, 3.0, gamma))
    return (-(1 - p) ** g * np.log(p)).mean()


def ecp(l, y, beta=0.1):
    p = np.clip(softmax(l), 1e-10, 1 - 1e-10)
    return ce(l, y) - beta * (-p * np.log(p)).mean()


def mmce(l, y, weight=0.1, bandwidth=0.4):
    p = softmax(l)
    r = p.max(axis=1)
    c = (p.argmax(axis=1) == y).astype(float)
    n = len(y)
    total = 0.0
    for i in range(n):
        for j in range(n):
            total += (c[i] - r[i]) * (c[j] - r[j]) * np.exp(-abs(r[i] - r[j]) / bandwidth)
    return ce(l, y) + weight * total / n ** 2


def _logsig(x):
    return -np.logaddexp(0.0, -x)


def cpc(l, y, w_bd=10.0, w_be=1.0):
    n, k = l.shape
    bd = be = 0.0
    for i in range(n):
        for a in range(k):
            if a != y[i]:
                bd += _logsig(l[i, y[i]] - l[i, a])
                for b in range(k):
                    if b != y[i] and b != a:
                        be += 0.5 * _logsig(l[i, a] - l[i, b])
    bd = -bd / (n * (k - 1))
    be = -be / (n * (k - 1) * (k - 2))
    return ce(l, y) + w_bd * bd + w_be * be


def distances(l):
    return l.max(axis=1, keepdims=True) - l


def mbls(l, y, margin=10.0, weight=0.1):
    return ce(l, y) + weight * np.maximum(distances(l) - margin, 0).mean()


def cals_hr(l, y, lambdas, margin=10.0):
    return ce(l, y) + (np.maximum(distances(l) - margin, 0) * lambdas).mean()


def phr(z, rho, lam):
    return np.where(lam + rho * z >= 0, lam * z + rho * z ** 2 / 2, -lam ** 2 / (2 * rho))


def p2(z, rho, lam):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z >= 0, lam * z + lam * rho * z ** 2 + rho ** 2 * z ** 3 / 6, lam * z / (1 - rho * z))


def p3(z, rho, lam):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z >= 0, lam * z + lam * rho * z ** 2, lam * z / (1 - rho * z))


PENALTY = {"phr": phr, "p2": p2, "p3": p3}


def cals_alm(l, y, lambdas, rhos, margin=10.0, penalty="phr"):
    z = distances(l) / margin - 1
    return ce(l, y) + PENALTY[penalty](z, rhos, lambdas).mean()
