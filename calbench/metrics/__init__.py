"""Calibration metrics of METRICS.md with exact float64 accumulation, and vectorised bootstrap intervals.

compute_metrics(labels, *, logits=None, probs=None, bins=15, ignore_index=None, keys=None) -> dict
bootstrap_indices(n, B, seed) -> (B, n) int64
bootstrap_metrics(labels, *, logits|probs, B=1000, seed=0, ci=0.95, keys=None, bins=15, ignore_index=None)
paired_bootstrap(labels, *, logits_a|probs_a, logits_b|probs_b, ...)
"""

from calbench.metrics.core import ALL_KEYS, METRIC_INFO, METRIC_KEYS, compute_metrics

__all__ = ["ALL_KEYS", "METRIC_INFO", "METRIC_KEYS", "compute_metrics"]

from calbench.metrics.bootstrap import bootstrap_indices, bootstrap_metrics, paired_bootstrap  # noqa: E402

__all__ += ["bootstrap_indices", "bootstrap_metrics", "paired_bootstrap"]
