"""compute_metrics: the requested metrics of the registry from one chunked pass (stats.collect).

METRIC_INFO, METRIC_KEYS and ALL_KEYS are views of the registry kept for older callers; they are
read at access time, so a metric module imported later still appears in them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calbench.errors import InputError
from calbench.metrics.inputs import Prepared, prepare
from calbench.metrics.registry import METRICS, default_keys, resolve_keys
from calbench.metrics.stats import SampleStats, collect

__all__ = ["compute_metrics", "compute_prepared", "evaluate", "needs_of", "resolve_keys", "METRIC_INFO"]


class _InfoView(Mapping):
    """{key: {"name", "higher_is_better", "percent", "header", "definition"}} read from METRICS."""

    def __getitem__(self, key: str) -> dict:
        s = METRICS.get(key)
        return {"name": s.name, "higher_is_better": s.higher_is_better, "percent": s.percent,
                "header": s.header, "definition": s.definition}

    def __iter__(self):
        return iter(METRICS.names())

    def __len__(self) -> int:
        return len(METRICS)


METRIC_INFO = _InfoView()


def __getattr__(name: str):
    if name == "METRIC_KEYS":
        return default_keys(False)
    if name == "ALL_KEYS":
        return tuple(METRICS.names())
    raise AttributeError(name)


def needs_of(keys) -> frozenset:
    """Everything the pass must produce for these metrics."""
    return frozenset().union(*(METRICS.get(k).needs for k in keys))


def evaluate(stats: SampleStats, keys, weights: np.ndarray | None = None) -> dict:
    """{key: value} of each metric's function: floats for the point estimate, (b,) arrays for a
    (b, n) weights matrix."""
    out = {}
    for key in keys:
        value = METRICS.get(key).fn(stats, weights)
        out[key] = float(value) if weights is None else np.asarray(value, dtype=np.float64)
    return out


def check_bins(bins) -> int:
    if int(bins) < 1:
        raise InputError(f"bins must be a positive integer, got {bins}")
    return int(bins)


def compute_metrics(labels, *, logits=None, probs=None, bins: int = 15, ignore_index: int | None = None,
                    keys=None, class_counts=None, shot_thresholds=None) -> dict[str, float]:
    """The metrics of docs/metrics.md as fractions, keyed in registry order (default: every default
    metric; segmentation-only ones such as miou for (N, K, H, W) inputs).

    labels (N,) int with logits= or probs= (N, K); or segmentation (N, H, W) with (N, K, H, W).
    numpy arrays or torch tensors. Raises InputError for malformed inputs. The values are checked
    block by block inside the single pass, not in a pass of their own.
    class_counts ((K,) train images per class) and shot_thresholds (None = OLTR's, "terciles" or
    (few_below, many_above)) serve the long-tail keys only (longtail.py).
    """
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index, check_values=False)
    return compute_prepared(prep, bins=bins, keys=keys, check_values=True, class_counts=class_counts,
                            shot_thresholds=shot_thresholds)


def compute_prepared(prep: Prepared, bins: int = 15, keys=None, check_values: bool = False,
                     class_counts=None, shot_thresholds=None) -> dict[str, float]:
    from calbench.metrics.longtail import shot_groups_for

    bins = check_bins(bins)
    keys = resolve_keys(keys, prep.segmentation)
    needs = needs_of(keys)
    shots = shot_groups_for(keys, needs, prep.num_classes, class_counts, shot_thresholds)
    return evaluate(collect(prep, bins, needs, check_values=check_values, shot_of_class=shots), keys)

