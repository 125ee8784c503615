"""Mean IoU from the confusion matrix of predictions against labels (ignore_index rows already
dropped by inputs.prepare)."""

from __future__ import annotations

import numpy as np


def confusion_keys(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Flat confusion-matrix cell of each row: label * K + prediction."""
    return labels * num_classes + pred


def miou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """mean over classes with a non-empty union of TP / (TP + FP + FN); conf (..., K, K) rows=label."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(axis=-1) + conf.sum(axis=-2) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), 0.0)
    return iou.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def miou(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    cells = np.bincount(confusion_keys(labels, pred, num_classes), minlength=num_classes ** 2)
    return float(miou_from_confusion(cells.reshape(num_classes, num_classes).astype(np.float64)))
