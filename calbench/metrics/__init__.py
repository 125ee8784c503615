"""Calibration metrics behind one registry (docs/metrics.md), exact float64 accumulation, and
vectorised bootstrap intervals.

compute_metrics(labels, *, logits=None, probs=None, bins=15, ignore_index=None, keys=None) -> dict[str, float]
reliability_bins(labels, *, logits=None, probs=None, bins=15, ignore_index=None) -> dict of arrays
bootstrap_indices(n, B, seed) -> (B, n) int64
bootstrap_metrics(labels, *, logits|probs, B=1000, seed=0, ci=0.95, keys=None, bins=15, ignore_index=None)
    -> {"point", "ci", "samples"}
paired_bootstrap(labels, *, logits_a|probs_a, logits_b|probs_b, ...) -> same, of a - b, plus "a", "b"
seed_bootstrap(runs, *, B=1000, seed=0, ...) -> two-level (seeds, then test samples) intervals
METRICS (registry of MetricSpec), default_keys(segmentation=False)

Adding a metric is one file in this package: a function `fn(stats, weights)` decorated with
`@metric(key, ...)` (registry.py); every module of the package is imported below, and
compute_metrics, the bootstrap, the tables, `calbench list metrics` and the registry-wide tests
iterate METRICS.
"""

from __future__ import annotations

import importlib
import pkgutil

from calbench.metrics.registry import METRICS, MetricSpec, default_keys, metric

# The standard metrics first, in the order of the papers' tables (registry order = table order);
# then every other module, so that a new metric file needs no edit here.
_FAMILIES = ("accuracy", "calibration", "scoring", "smooth", "segmentation")
for _module in _FAMILIES + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__))):
    importlib.import_module(f"{__name__}.{_module}")

from calbench.metrics.bootstrap import bootstrap_indices, bootstrap_metrics, paired_bootstrap, seed_bootstrap  # noqa: E402
from calbench.metrics.core import METRIC_INFO, compute_metrics  # noqa: E402
from calbench.metrics.reliability import reliability_bins  # noqa: E402

__all__ = ["ALL_KEYS", "METRICS", "METRIC_INFO", "METRIC_KEYS", "MetricSpec", "bootstrap_indices",
           "bootstrap_metrics", "compute_metrics", "default_keys", "metric", "paired_bootstrap",
           "reliability_bins", "seed_bootstrap"]


def __getattr__(name: str):
    """METRIC_KEYS (default keys) and ALL_KEYS (every key): views of METRICS, read at access time."""
    if name in ("METRIC_KEYS", "ALL_KEYS"):
        from calbench.metrics import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
