"""Mean IoU from the confusion matrix of predictions against labels (ignore_index rows already
dropped by inputs.prepare); docs/metrics.md."""

from __future__ import annotations

import numpy as np

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, weighted


def miou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """mean over classes with a non-empty union of TP / (TP + FP + FN); conf (..., K, K) rows=label."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(axis=-1) + conf.sum(axis=-2) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), 0.0)
    return iou.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def _cell_matrix(stats: SampleStats) -> "scipy.sparse.csr_matrix":
    """(K*K, n) sparse: sample i counts in confusion cell label_i * K + pred_i."""
    import scipy.sparse  # only its bootstrap path builds the sparse matrix

    k, n = stats.num_classes, stats.n
    cells = stats.sample("labels") * k + stats.sample("pred")
    return scipy.sparse.csr_matrix((np.ones(n), (cells, np.arange(n))), shape=(k * k, n))


@metric("miou", name="mean IoU", higher_is_better=True, percent=True, header="mIoU",
        definition="confusion-matrix mean IoU over classes present, ignore_index excluded",
        needs=("confusion",), segmentation_only=True)
def miou(stats: SampleStats, weights: np.ndarray | None):
    """Classes absent from both labels and predictions (empty union) are left out of the mean."""
    if weights is None:
        return float(miou_from_confusion(stats.confusion))
    cm = cached(stats, "cells", lambda: _cell_matrix(stats))
    k = stats.num_classes
    return miou_from_confusion((cm @ weighted(stats, weights)["Wt"]).T.reshape(-1, k, k))
