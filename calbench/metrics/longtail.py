"""Long-tail metrics: accuracy and ECE on the test samples of many-, medium- and few-shot classes
(docs/metrics.md).

A class is many-shot with more than 100 training images, few-shot with fewer than 20 and
medium-shot otherwise: the split of Liu et al., "Large-Scale Long-Tailed Recognition in an Open
World" (OLTR, CVPR 2019), used by the long-tail literature since. A dataset may give other
thresholds; "terciles" puts them at the 1/3 and 2/3 quantiles of its train counts (np.quantile,
linear), so that K distinct counts split into about K/3 classes per group (digits-lt: 3 / 4 / 3).

A sample belongs to the group of its LABEL (as in OLTR: the accuracy on the test images of the
many-shot classes). The ECE of a group is the `ece` of docs/metrics.md over that group's samples
(equal-width bins, weights n_b / N_group). A group without test samples gives NaN.

The groups need the run's train class counts (`class_counts=` of compute_metrics; a run's
predictions.npz stores them as `train_class_counts`); without them these keys are an InputError.
They are not in the default key set.
"""

from __future__ import annotations

import numpy as np

from calbench.errors import InputError
from calbench.metrics.binning import bin_index
from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, weighted

OLTR_THRESHOLDS = (20, 100)  # few: count < 20; many: count > 100
GROUPS = ("many", "medium", "few")


def shot_thresholds_of(class_counts: np.ndarray, thresholds) -> tuple[float, float]:
    """(few_below, many_above): OLTR's by default, "terciles" of the counts, or a given pair."""
    if thresholds is None:
        return OLTR_THRESHOLDS
    if isinstance(thresholds, str):
        if thresholds != "terciles":
            raise InputError(f"shot thresholds must be 'terciles' or (few_below, many_above), got '{thresholds}'")
        lo, hi = np.quantile(class_counts.astype(np.float64), [1 / 3, 2 / 3])
        return float(lo), float(hi)
    few_below, many_above = (float(t) for t in thresholds)
    if not few_below <= many_above:
        raise InputError(f"shot thresholds need few_below <= many_above, got {thresholds}")
    return few_below, many_above


def shot_groups(class_counts, num_classes: int, thresholds=None) -> np.ndarray:
    """(K,) int64 group of each class: 0 many (count > many_above), 2 few (count < few_below), 1 medium."""
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.shape[0] != num_classes or counts.dtype.kind not in "iuf":
        raise InputError(f"class_counts must be {num_classes} numbers (one per class), got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or (counts < 0).any():
        raise InputError("class_counts must be finite and >= 0")
    few_below, many_above = shot_thresholds_of(counts, thresholds)
    return np.where(counts > many_above, 0, np.where(counts < few_below, 2, 1)).astype(np.int64)


def shot_groups_for(keys, needs: frozenset, num_classes: int, class_counts, thresholds):
    """The groups when a requested key needs them; InputError naming what is missing."""
    if "shots" not in needs:
        return None
    if class_counts is None:
        from calbench.metrics.registry import METRICS

        asked = [k for k in keys if "shots" in METRICS.get(k).needs]
        raise InputError(f"metrics {', '.join(asked)} need the train class counts (class_counts=; a run's "
                         "predictions.npz stores them as train_class_counts)")
    return shot_groups(class_counts, num_classes, thresholds)


def _shot_matrix(stats: SampleStats) -> "scipy.sparse.csr_matrix":
    """(9M, n) sparse: rows (g * 3 + j) * M + b of sample i (group g, bin b) hold 1, c_i, r_i."""
    import scipy.sparse  # only its bootstrap path builds the sparse matrix

    M, n = stats.bins, stats.n
    conf, correct = stats.sample("conf"), stats.sample("correct")
    cell = stats.shot_of_class[stats.sample("labels")] * 3 * M + bin_index(conf, M)
    rows = np.concatenate([cell, cell + M, cell + 2 * M])
    vals = np.concatenate([np.ones(n), correct, conf])
    return scipy.sparse.csr_matrix((vals, (rows, np.tile(np.arange(n), 3))), shape=(9 * M, n))


def _group_sums(stats: SampleStats, weights, group: int):
    """(count, sum c, sum r) per bin of one group: (M,) each, or (b, M) for weights."""
    if weights is None:
        return stats.shot_binned[group]
    w, M = weighted(stats, weights), stats.bins
    if "shots" not in w:
        w["shots"] = (cached(stats, "shots", lambda: _shot_matrix(stats)) @ w["Wt"]).T.reshape(-1, 3, 3, M)
    T = w["shots"][:, group]
    return T[:, 0], T[:, 1], T[:, 2]


def _group_acc(stats, weights, group):
    count, sum_c, _ = _group_sums(stats, weights, group)
    total = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sum_c.sum(axis=-1) / np.maximum(total, 1e-300), np.nan)


def _group_ece(stats, weights, group):
    count, sum_c, sum_r = _group_sums(stats, weights, group)
    total = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(sum_c - sum_r).sum(axis=-1) / np.maximum(total, 1e-300), np.nan)


def _register(group: int, name: str) -> None:
    metric(f"acc-{name}", name=f"accuracy on {name}-shot classes", higher_is_better=True, percent=True,
           header=f"Acc-{name}", definition=f"acc over test samples whose label is a {name}-shot class "
           "(OLTR: many > 100, few < 20 train images)", needs=("shots",), default=False)(
        lambda stats, weights: _group_acc(stats, weights, group))
    metric(f"ece-{name}", name=f"ECE on {name}-shot classes", higher_is_better=False, percent=True,
           header=f"ECE-{name}", definition=f"ece over test samples whose label is a {name}-shot class",
           needs=("shots",), default=False, binning="equal-width", scope="top-label")(
        lambda stats, weights: _group_ece(stats, weights, group))


for _group, _name in enumerate(GROUPS):
    _register(_group, _name)
