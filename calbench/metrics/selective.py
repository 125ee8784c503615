"""Selective prediction from the confidence ranking (docs/metrics.md): aurc and e-aurc (Geifman,
Uziel & El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural Classifiers", ICLR 2019),
augrc (Traub et al., "Overcoming Common Flaws in the Evaluation of Selective Classification
Systems", NeurIPS 2024) and the selective risk at 80 / 90 / 95 % coverage.

The samples are accepted in order of decreasing confidence r_i; e(k) is the number of errors
(c_i = 0) among the k accepted first. Ties: samples of equal confidence are accepted in random
order and the EXPECTED value is reported, which makes e(k) linear inside each run of equal
confidences (from the errors before the run to the errors after it). That is exact for every
statistic below (each is linear in e(k)) and makes them depend only on the multiset of (r_i, c_i).

  aurc      = (1/N) sum_{k=1}^N e(k) / k                  (mean selective risk over coverages k/N)
  e-aurc    = aurc - [rho + (1 - rho) ln(1 - rho)],  rho = e(N) / N   (Geifman et al.'s optimum)
  augrc     = integral over coverage of e / N, trapezoids between runs of equal confidence
              (the generalised risk P(error, accepted) of Traub et al., as their code integrates)
  risk@covQ = e(k) / k with k = ceil(Q N): the smallest number of samples covering at least Q
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.ks import tie_ends
from calbench.metrics.registry import metric
from calbench.metrics.sorted_rows import COVERAGES, RISK_PERCENTS, key_walk, selective_rows, sorted_inputs
from calbench.metrics.stats import SampleStats, cached, sorted_key, unpack, weighted


def run_sums(stats: SampleStats, weights: np.ndarray | None):
    """(count, errors) of each run of equal confidence, in DECREASING confidence: (b, G) arrays."""
    if weights is None:  # shared by every selective metric of the call
        return cached(stats, "point_runs", lambda: _point_runs(stats))
    w = weighted(stats, weights)
    if "runs" not in w:
        W, r, c = sorted_inputs(stats, weights)
        starts = np.concatenate([[0], tie_ends(r)[:-1] + 1])
        count, errors = np.add.reduceat(W, starts, axis=1), np.add.reduceat(W * (1.0 - c), starts, axis=1)
        w["runs"] = (count[:, ::-1], errors[:, ::-1])
    return w["runs"]


def _point_runs(stats: SampleStats):
    """run_sums of the point estimate, from the sorted key, with few n-long arrays at a time."""
    r, c = unpack(sorted_key(stats))
    ends = tie_ends(r)
    starts = np.concatenate([[0], ends[:-1] + 1])
    count = np.empty((1, ends.size))
    count[0, 0] = ends[0] + 1
    np.subtract(ends[1:], ends[:-1], out=count[0, 1:])
    del ends
    np.subtract(1.0, c, out=c)  # 1 - c_i: the errors
    errors = np.add.reduceat(c, starts)[None]
    return count[:, ::-1], errors[:, ::-1]


def _value(out: np.ndarray, weights):
    """A float for the point estimate (one row), the (b,) row values for weights."""
    return float(out[0]) if weights is None else out


def _harmonic_gap(K: np.ndarray) -> np.ndarray:
    """H(K_g) - H(K_{g-1}) along each row (K_{-1} = 0), H(m) = sum_{j <= m} 1/j, at the integer
    cumulative counts K of consecutive runs (bootstrap counts are integers, so K_g - count_g is
    exactly K_{g-1}): one table of H built in place (one n-long array), dropped before the result."""
    idx = np.rint(K).astype(np.int64)
    table = np.arange(int(idx.max()) + 1, dtype=np.float64)
    np.reciprocal(table[1:], out=table[1:])
    np.cumsum(table, out=table)  # table[0] = 0 (the reciprocal skips it)
    h = table[idx]
    del idx, table
    gap = np.empty_like(h)
    gap[:, 0] = h[:, 0]
    np.subtract(h[:, 1:], h[:, :-1], out=gap[:, 1:])
    return gap


def aurc_of(count: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """sum over runs of sum_{k in run} e(k)/k, with e linear in the run: a (H(K) - H(K0)) + slope n
    with a = E0 - K0 slope; the harmonic table is dropped before a and slope exist and the rest is
    in place, so that at most six run-long arrays coexist (peak memory of the default metrics)."""
    K = np.cumsum(count, axis=1)
    total = K[:, -1].copy()
    part = _harmonic_gap(K)
    K -= count  # K0: the count before each run
    slope = np.divide(errors, count, out=np.zeros_like(errors), where=count > 0)
    a = np.cumsum(errors, axis=1)
    a -= errors  # E0
    np.multiply(K, slope, out=K)
    a -= K  # E0 - K0 slope
    del K
    part *= a
    del a
    np.multiply(slope, count, out=slope)
    part += slope
    return part.sum(axis=1) / total


@metric("aurc", name="area under the risk-coverage curve", higher_is_better=False, percent=True,
        header="AURC", definition="mean over k of the error rate of the k most confident samples",
        needs=("conf",))
def aurc(stats: SampleStats, weights: np.ndarray | None):
    return _value(_aurc(stats, weights), weights)


def _aurc(stats: SampleStats, weights: np.ndarray | None) -> np.ndarray:
    """aurc_of the runs, once per call for aurc and e-aurc (the C walk of sorted_rows.py for weights
    when built: one pass per count row for every selective metric)."""
    if weights is None:
        walk = key_walk(stats)  # the C walk over the sorted keys, when built
        return np.array([walk["aurc"]]) if walk else cached(stats, "point_aurc", lambda: aurc_of(*run_sums(stats, None)))
    fast = selective_rows(stats, weights, COVERAGES)
    if fast is not None:
        return fast["aurc"]
    w = weighted(stats, weights)
    if "aurc" not in w:
        w["aurc"] = aurc_of(*run_sums(stats, weights))
    return w["aurc"]


def optimal_aurc(rho: np.ndarray) -> np.ndarray:
    """Geifman et al.'s AURC of a perfect ranking, rho + (1 - rho) ln(1 - rho) (0 ln 0 = 0)."""
    keep = 1.0 - rho
    return rho + np.where(keep > 0, keep * np.log(np.maximum(keep, 1e-300)), 0.0)


@metric("e-aurc", name="excess AURC", higher_is_better=False, percent=True, header="E-AURC",
        definition="aurc minus the aurc of a perfect ranking, rho + (1-rho) ln(1-rho)", needs=("conf",))
def e_aurc(stats: SampleStats, weights: np.ndarray | None):
    fast = key_walk(stats) if weights is None else selective_rows(stats, weights, COVERAGES)
    if fast is not None:
        if weights is None:
            return fast["aurc"] - float(optimal_aurc(np.array(fast["errors"] / stats.n)))
        return fast["aurc"] - optimal_aurc(fast["errors"] / fast["totals"])
    count, errors = run_sums(stats, weights)
    return _value(_aurc(stats, weights) - optimal_aurc(errors.sum(axis=1) / count.sum(axis=1)), weights)


@metric("augrc", name="area under the generalised risk-coverage curve", higher_is_better=False, percent=True,
        header="AUGRC", definition="integral over coverage of P(error and accepted) (Traub et al. 2024)",
        needs=("conf",), default=False)
def augrc(stats: SampleStats, weights: np.ndarray | None):
    fast = key_walk(stats) if weights is None else selective_rows(stats, weights, COVERAGES)
    if fast is not None:
        return fast["augrc"]
    count, errors = run_sums(stats, weights)
    n = count.sum(axis=1, keepdims=True)
    E = np.cumsum(errors, axis=1)
    return _value((((2 * E - errors) / (2 * n)) * count / n).sum(axis=1), weights)


def risk_at_coverage(count: np.ndarray, errors: np.ndarray, coverage: float) -> np.ndarray:
    """e(k) / k at k = ceil(coverage N), e interpolated inside the run holding the k-th sample."""
    K, E = np.cumsum(count, axis=1), np.cumsum(errors, axis=1)
    k = np.ceil(np.round(coverage * K[:, -1], 9))
    rows = np.arange(K.shape[0])
    g = np.array([np.searchsorted(K[i], k[i], side="left") for i in rows])
    K0, E0 = K[rows, g] - count[rows, g], E[rows, g] - errors[rows, g]
    return (E0 + (k - K0) * errors[rows, g] / count[rows, g]) / k


def risk_of(stats: SampleStats, weights: np.ndarray | None, coverage: float):
    """risk@cov at `coverage` (one of COVERAGES: the C walk computes them all at once)."""
    fast = key_walk(stats) if weights is None else selective_rows(stats, weights, COVERAGES)
    if fast is not None:
        return fast["risk"][coverage]
    return _value(risk_at_coverage(*run_sums(stats, weights), coverage), weights)


def _register(percent: int) -> None:
    metric(f"risk@cov{percent}", name=f"selective risk at {percent}% coverage", higher_is_better=False,
           percent=True, header=f"Risk@{percent}", definition=f"error rate of the ceil({percent / 100:g} N) "
           "most confident samples (ties: expectation over their order)", needs=("conf",), default=False)(
        lambda stats, weights: risk_of(stats, weights, percent / 100))


for _percent in RISK_PERCENTS:
    _register(_percent)
