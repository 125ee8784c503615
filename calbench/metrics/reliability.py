"""Per-bin data of a reliability diagram (the plot command draws it): the same (lo, hi] bins as ece
(docs/metrics.md), from the same single pass."""

from __future__ import annotations

import numpy as np

from calbench.metrics.binning import bin_edges
from calbench.metrics.inputs import prepare
from calbench.metrics.stats import collect


def reliability_bins(labels, *, logits=None, probs=None, bins: int = 15, ignore_index: int | None = None) -> dict:
    """{"edges" (M+1,), "count" (M,), "accuracy" (M,), "confidence" (M,)}: mean c and mean r per
    equal-width bin (NaN where a bin is empty); count is the number of samples per bin."""
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index, check_values=False)
    count, sum_c, sum_r = collect(prep, int(bins), frozenset({"binned"})).binned
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, sum_c / count, np.nan)
        conf = np.where(count > 0, sum_r / count, np.nan)
    return {"edges": bin_edges(int(bins)), "count": count.astype(np.int64), "accuracy": acc, "confidence": conf}
