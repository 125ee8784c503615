"""Calibration metrics of METRICS.md with exact float64 accumulation, and vectorised bootstrap intervals.

compute_metrics(labels, *, logits=None, probs=None, bins=15, ignore_index=None, keys=None) -> dict[str, float]
reliability_bins(labels, *, logits=None, probs=None, bins=15, ignore_index=None) -> dict of arrays
bootstrap_indices(n, B, seed) -> (B, n) int64
bootstrap_metrics(labels, *, logits|probs, B=1000, seed=0, ci=0.95, keys=None, bins=15, ignore_index=None)
    -> {"point", "ci", "samples"}
paired_bootstrap(labels, *, logits_a|probs_a, logits_b|probs_b, ...) -> same, of a - b, plus "a", "b"
seed_bootstrap(runs, *, B=1000, seed=0, ...) -> two-level (seeds, then test samples) intervals
"""

from calbench.metrics.bootstrap import bootstrap_indices, bootstrap_metrics, paired_bootstrap, seed_bootstrap
from calbench.metrics.core import ALL_KEYS, METRIC_INFO, METRIC_KEYS, compute_metrics
from calbench.metrics.reliability import reliability_bins

__all__ = ["ALL_KEYS", "METRIC_INFO", "METRIC_KEYS", "bootstrap_indices", "bootstrap_metrics", "compute_metrics",
           "paired_bootstrap", "reliability_bins", "seed_bootstrap"]
