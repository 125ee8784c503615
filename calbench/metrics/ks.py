"""KS calibration error of Gupta, Rahimi, Ajanthan, Mensink, Sminchisescu & Hartley, "Calibration
of Neural Networks using Splines" (ICLR 2021), top-label (docs/metrics.md).

KS = max over thresholds t of |sum_{i: r_i <= t} (r_i - c_i)| / N: the largest gap between the
cumulative confidence and the cumulative accuracy along the sorted confidences, without bins.
Gupta et al. take the partial sums after every sample of the sorted list; with tied confidences
that depends on the order inside a tie, so calbench evaluates them only at the end of each run of
equal confidences (identical to theirs when no two confidences tie).
"""

from __future__ import annotations

import numpy as np

from calbench.metrics.registry import metric
from calbench.metrics.sorted_rows import conf_rows, key_walk, sorted_inputs
from calbench.metrics.stats import SampleStats, sorted_key, unpack, weighted


def tie_ends(r_sorted: np.ndarray) -> np.ndarray:
    """Index of the last sample of each run of equal values in a sorted array."""
    return np.flatnonzero(np.append(r_sorted[1:] != r_sorted[:-1], True))


def _ks_point(stats: SampleStats, step: int = 1 << 16) -> float:
    """max |cumsum(r_i - c_i)| / N at the run ends of the sorted key, in cache-sized blocks: the
    running sum enters each block through its first term, so the sums are those of one cumsum."""
    key, n = sorted_key(stats), stats.n
    carry = best = 0.0
    for start in range(0, n, step):
        stop = min(n, start + step)
        r, c = unpack(key[start:stop])
        d = r - c
        d[0] += carry
        np.cumsum(d, out=d)
        carry = d[-1]
        last = stop == n or r[-1] != unpack(key[stop:stop + 1])[0][0]
        ends = np.append(r[1:] != r[:-1], last)
        if ends.any():
            best = max(best, float(np.abs(d[ends]).max()))
    return best / n


@metric("ks", name="KS calibration error", higher_is_better=False, percent=True, header="KS",
        definition="max over sorted confidences of |cumsum(r_i - c_i)| / N (Gupta et al. 2021)", needs=("conf",))
def ks(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        walk = key_walk(stats)  # the C walk over the sorted keys, when built
        return _ks_point(stats) if walk is None else walk["ks"]
    fast = conf_rows(stats, weights)  # the C walk shared with ece's bins and aece
    if fast is not None:
        return fast["ks"]
    W, r, c = sorted_inputs(stats, weights)
    gaps = np.cumsum(W * (r - c), axis=1)[:, tie_ends(r)]
    return np.abs(gaps).max(axis=1) / weighted(stats, weights)["total"]
