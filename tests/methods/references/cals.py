"""CALS-HR and CALS-ALM at their initial multipliers (lambda_k = lambda_init, rho_k = rho_init)."""

import numpy as np

from .core import cross_entropy, distances, reference


def hinge_loss(logits, targets, margin, lambdas):
    """CE + mean_ik lambda_k relu(d_ik - m), any per-class (K,) lambdas."""
    return cross_entropy(logits, targets) + (np.maximum(distances(logits) - margin, 0) * lambdas).mean()


@reference("cals-hr", cases=[{"margin": 4.0, "lambda_init": 0.3}])
def cals_hr(logits, targets, *, margin, lambda_init, **_):
    return hinge_loss(logits, targets, margin, np.full(logits.shape[1], lambda_init))


def phr(z, rho, lam):
    return np.where(lam + rho * z >= 0, lam * z + rho * z ** 2 / 2, -lam ** 2 / (2 * rho))


def p2(z, rho, lam):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z >= 0, lam * z + lam * rho * z ** 2 + rho ** 2 * z ** 3 / 6, lam * z / (1 - rho * z))


def p3(z, rho, lam):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z >= 0, lam * z + lam * rho * z ** 2, lam * z / (1 - rho * z))


PENALTY = {"phr": phr, "p2": p2, "p3": p3}


def alm_loss(logits, targets, margin, lambdas, rhos, penalty="phr"):
    """CE + mean_ik P(d_ik / m - 1, rho_k, lambda_k), any per-class (K,) lambdas and rhos."""
    z = distances(logits) / margin - 1
    return cross_entropy(logits, targets) + PENALTY[penalty](z, rhos, lambdas).mean()


@reference("cals-alm", cases=[{"margin": 4.0, "lambda_init": 0.5, "rho_init": 2.0, "penalty": kind}
                              for kind in ("phr", "p2", "p3")])
def cals_alm(logits, targets, *, margin, penalty, lambda_init, rho_init, **_):
    k = logits.shape[1]
    return alm_loss(logits, targets, margin, np.full(k, lambda_init), np.full(k, rho_init), penalty)
