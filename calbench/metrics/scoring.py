"""Proper scores and accuracy from the per-sample quantities of rows.summarise (float64 means)."""

from __future__ import annotations

import numpy as np


def accuracy(correct: np.ndarray) -> float:
    """acc = mean c_i."""
    return float(np.mean(correct, dtype=np.float64))


def nll(nll_terms: np.ndarray) -> float:
    """nll = mean -log p_{i,y_i} (natural log; from logits via log_softmax)."""
    return float(np.mean(nll_terms, dtype=np.float64))


def brier(brier_terms: np.ndarray) -> float:
    """brier = mean_i sum_k (p_ik - 1[y_i = k])^2 (the multiclass Brier score, not divided by K)."""
    return float(np.mean(brier_terms, dtype=np.float64))
