"""Out-of-distribution detection: scores of a classifier's logits and detection metrics of an
in-distribution / OOD pair (docs/metrics.md, docs/shift.md).

These do not fit the per-sample calibration registry (METRICS: fn(stats, weights) over one labelled
prediction set): a detection metric needs TWO sets, the in-distribution test scores and the OOD
scores. So they have their own two registries, each entry one function:

    OOD_SCORES   score(logits (n, K) float64) -> (n,) ; higher = more in-distribution
    OOD_METRICS  metric(in_scores, out_scores) -> float ; in-distribution is the positive class

    ood_scores(logits, kinds=None) -> {score: (n,)}
    ood_metrics(in_scores, out_scores, keys=None) -> {metric: float}

Conventions (Hendrycks & Gimpel, ICLR 2017, "A baseline for detecting misclassified and
out-of-distribution examples"): AUROC is the probability that a random in-distribution sample scores
above a random OOD one (ties count one half); AUPR-in takes in-distribution as positive with the
score, AUPR-out takes OOD as positive with the negated score; both are average precision (the
step-wise area, sum_k (R_k - R_{k-1}) P_k, as scikit-learn's average_precision_score). FPR95 is the
share of OOD samples accepted at the largest threshold that accepts at least 95% of in-distribution
samples (Liang et al., ICLR 2018, ODIN).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from calbench.errors import InputError
from calbench.registry import Registry

OOD_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("ood score")
OOD_METRICS: Registry[Callable[[np.ndarray, np.ndarray], float]] = Registry("ood metric")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@OOD_SCORES.register("msp", description="maximum softmax probability max_k p_k (Hendrycks & Gimpel 2017)")
def max_softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(logits).max(axis=1))


@OOD_SCORES.register("max_logit", description="maximum logit max_k z_k (Hendrycks et al., ICML 2022)")
def max_logit(logits: np.ndarray) -> np.ndarray:
    return logits.max(axis=1)


@OOD_SCORES.register("energy", description="negative free energy log sum_k exp z_k (Liu et al., NeurIPS 2020)")
def neg_energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


@OOD_SCORES.register("entropy", description="negative predictive entropy sum_k p_k log p_k (higher = surer)")
def neg_entropy(logits: np.ndarray) -> np.ndarray:
    logp = _log_softmax(logits)
    return (np.exp(logp) * logp).sum(axis=1)


def _pair(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(in_scores, dtype=np.float64).ravel()
    b = np.asarray(out_scores, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InputError("OOD metrics need at least one in-distribution and one OOD score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("OOD scores must be finite")
    return a, b


@OOD_METRICS.register("auroc", description="P(in score > OOD score) + P(tie)/2", header="AUROC")
def auroc(in_scores, out_scores) -> float:
    """Mann-Whitney U / (n_in n_out) with mid-ranks for ties (equals the ROC area)."""
    a, b = _pair(in_scores, out_scores)
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    sorted_vals = both[order]
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0                   # 1-based mid-rank of each tie group
    ranks[order] = np.repeat(mid, counts)
    u = ranks[:a.size].sum() - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * b.size))


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """sum over distinct thresholds t (descending) of (R_t - R_prev) * P_t, positives score high."""
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_pos = scores[order], is_pos[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    tp = np.cumsum(is_pos)[last_of_group]
    taken = last_of_group + 1.0
    precision, recall = tp / taken, tp / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@OOD_METRICS.register("aupr_in", description="average precision, in-distribution positive", header="AUPR-in")
def aupr_in(in_scores, out_scores) -> float:
    a, b = _pair(in_scores, out_scores)
    return average_precision(a, b)


@OOD_METRICS.register("aupr_out", description="average precision, OOD positive (negated score)", header="AUPR-out")
def aupr_out(in_scores, out_scores) -> float:
    a, b = _pair(in_scores, out_scores)
    return average_precision(-b, -a)


@OOD_METRICS.register("fpr95", description="share of OOD accepted when 95% of in-distribution is", header="FPR95",
                      lower_is_better=True)
def fpr_at_95_tpr(in_scores, out_scores) -> float:
    """Threshold t = the largest score with #{in >= t} >= 0.95 n_in; FPR = #{out >= t} / n_out."""
    a, b = _pair(in_scores, out_scores)
    need = int(np.ceil(0.95 * a.size - 1e-9))
    threshold = np.sort(a)[::-1][need - 1]
    return float(np.mean(b >= threshold))


def ood_scores(logits: np.ndarray, kinds=None) -> dict[str, np.ndarray]:
    """{score name: (n,) float64} of every (or each named) OOD score of the logits."""
    z = np.asarray(logits, dtype=np.float64)
    names = OOD_SCORES.names() if kinds is None else list(kinds)
    return {k: OOD_SCORES.get(k)(z) for k in names}


def ood_metrics(in_scores, out_scores, keys=None) -> dict[str, float]:
    """{metric: value} of every (or each named) OOD metric; in-distribution is the positive class."""
    names = OOD_METRICS.names() if keys is None else list(keys)
    return {k: OOD_METRICS.get(k)(in_scores, out_scores) for k in names}


def higher_is_better(key: str) -> bool:
    return not OOD_METRICS.entry(key).meta.get("lower_is_better", False)


def header(key: str) -> str:
    return OOD_METRICS.entry(key).meta.get("header", key.upper())
