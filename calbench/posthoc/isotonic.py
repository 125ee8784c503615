"""One-vs-rest isotonic regression (Zadrozny & Elkan, "Transforming classifier scores into accurate
multiclass probability estimates", KDD 2002), as scikit-learn's
`IsotonicRegression(increasing=True, y_min=0, y_max=1, out_of_bounds="clip")` per class, rows
renormalised (netcal's `IsotonicRegression` convention).

The fit follows scikit-learn's (sort by score, average the targets of tied scores, pool adjacent
violators with `sklearn.isotonic.isotonic_regression`, keep the ends of every constant run) without
its per-call input checks and its two-key sort, so 1,000 classes fit in well under a second; the map
is stored as its thresholds and applied by linear interpolation clipped at the ends, as scikit-learn
does. One difference: scikit-learn also pools scores closer than float64 resolution (1e-15) to the
first score of their run; calbench pools only equal scores (the fits coincide when distinct scores
are at least 1e-15 apart, and differ only below that scale otherwise).
"""

from __future__ import annotations

import numpy as np

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, probabilities, renormalised
from calbench.posthoc.registry import POSTHOC


def isotonic_regression(values, **options) -> np.ndarray:
    """scikit-learn's pool-adjacent-violators fit (`sklearn.isotonic.isotonic_regression`), imported
    on first use: importing scikit-learn costs about 0.9 s (it pulls in scipy.stats and pandas), and
    the registry imports this module in every run, most of which never fit an isotonic map."""
    from sklearn.isotonic import isotonic_regression as pool_adjacent_violators

    return pool_adjacent_violators(values, **options)


def isotonic_thresholds(scores: np.ndarray, targets: np.ndarray, order: np.ndarray | None = None):
    """(x, y) thresholds of the non-decreasing least-squares fit of targets on scores, clipped to
    [0, 1] (scikit-learn's `IsotonicRegression(y_min=0, y_max=1)._build_y`); `order` is an
    argsort of `scores` when the caller has one. Empty input gives the constant 0.5."""
    if scores.size == 0:
        return np.array([0.0]), np.array([0.5])
    order = np.argsort(scores) if order is None else order
    x, y = scores[order], targets[order]
    starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
    counts = np.diff(np.append(starts, x.size)).astype(np.float64)
    unique_x = x[starts]
    means = np.add.reduceat(y, starts) / counts
    fitted = isotonic_regression(means, sample_weight=counts, y_min=0.0, y_max=1.0, increasing=True)
    keep = np.ones(fitted.size, dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return unique_x[keep], fitted[keep]


def isotonic_apply(scores: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The fitted map: linear interpolation between thresholds, constant beyond the ends."""
    return np.interp(scores, x, y)


@POSTHOC.register("isotonic", description="One-vs-rest isotonic regression, rows renormalised.",
                  paper="Zadrozny & Elkan, KDD 2002")
class IsotonicCalibration(Calibrator):
    """Per class k, a non-decreasing map of p_k fitted to 1[label = k] on validation; the row is then
    divided by its sum (a row mapped to all zeros keeps its softmax probabilities). Each class has its
    own map, so the arg-max can move; outputs probabilities."""

    output = "probs"
    preserves_argmax = False

    def __init__(self) -> None:
        self.thresholds: list[tuple[np.ndarray, np.ndarray]] = []

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = probabilities(logits)
        orders = np.argsort(probs, axis=0)
        self.thresholds = [isotonic_thresholds(probs[:, k], (labels == k).astype(np.float64), orders[:, k])
                           for k in range(probs.shape[1])]

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(len(self.thresholds), logits, "isotonic")
        probs = probabilities(logits)
        mapped = np.empty_like(probs)
        for k, (x, y) in enumerate(self.thresholds):
            mapped[:, k] = isotonic_apply(probs[:, k], x, y)
        return renormalised(mapped, probs)

    def params(self) -> dict:
        return {"x": [x.tolist() for x, _ in self.thresholds], "y": [y.tolist() for _, y in self.thresholds]}

    def load_params(self, params: dict) -> None:
        self.thresholds = [(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
                           for x, y in zip(params["x"], params["y"])]
