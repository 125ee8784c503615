"""Multi-class isotonic regression, IRM (Zhang, Kailkhura & Han, "Mix-n-Match: Ensemble and
Compositional Methods for Uncertainty Calibration in Deep Learning", ICML 2020, Sec. 3.2).

One non-decreasing map is fitted to all N x K validation pairs (p_ik, 1[y_i = k]) pooled, so every
class shares it (unlike one-vs-rest isotonic, which fits K maps). As in the authors' code
(`mir_calibrate`), 1e-9 * p is added to the mapped values, which makes the map strictly increasing
(ties inside a constant run keep the input's order), and the row is then renormalised so it is a
probability vector, as the paper states.

The fit is `isotonic.isotonic_thresholds` on the N K pooled pairs, computed without sorting the
targets along: they are 1 exactly at the N true-class entries, so the mean target of each distinct
score is (true-class entries with that score) / (entries with that score), and adjacent scores with
equal means are merged before pool-adjacent-violators (the least-squares isotonic fit gives them equal
values anyway: averaging two unequal fitted values of equal targets keeps the order and lowers the
loss), which leaves ~2 N points instead of N K (`pooled_thresholds`).
"""

from __future__ import annotations

import numpy as np

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, probabilities, renormalised
from calbench.posthoc.isotonic import isotonic_apply, isotonic_regression
from calbench.posthoc.registry import POSTHOC

TIE_BREAK = 1e-9  # the authors' 1e-9 * p term


def pooled_thresholds(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) thresholds of the non-decreasing least-squares fit, clipped to [0, 1], of the targets
    1[y_i = k] on the scores p_ik pooled over all N K entries: equal (up to float rounding of the
    pooled means) to `isotonic_thresholds(probs.ravel(), onehot.ravel())`."""
    if probs.size == 0:
        return np.array([0.0]), np.array([0.5])
    x = np.sort(probs, axis=None)
    starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
    unique_x = x[starts]
    counts = np.diff(np.append(starts, x.size)).astype(np.float64)
    true_scores = probs[np.arange(len(labels)), labels]
    hits = np.bincount(np.searchsorted(unique_x, true_scores), minlength=unique_x.size).astype(np.float64)
    means = hits / counts
    runs = np.flatnonzero(np.concatenate([[True], means[1:] != means[:-1]]))
    run_weights = np.add.reduceat(counts, runs)
    fitted_runs = isotonic_regression(means[runs], sample_weight=run_weights, y_min=0.0, y_max=1.0, increasing=True)
    fitted = np.repeat(fitted_runs, np.diff(np.append(runs, means.size)))
    keep = np.ones(fitted.size, dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return unique_x[keep], fitted[keep]


@POSTHOC.register("irm", description="Multi-class isotonic regression: one map for all classes, renormalised.",
                  paper="Zhang et al., ICML 2020")
class MulticlassIsotonic(Calibrator):
    """IRM on softmax probabilities; outputs probabilities.

    The same strictly increasing map is applied to every entry of a row, so the order of the classes
    within a row, hence the arg-max, is kept (exactly in real arithmetic; in float64 two entries
    closer than about 1e-7 inside one constant run could round to a tie).
    """

    output = "probs"
    preserves_argmax = True

    def __init__(self) -> None:
        self.x = np.array([0.0])
        self.y = np.array([0.5])
        self.classes = 0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = probabilities(logits)
        self.classes = probs.shape[1]
        self.x, self.y = pooled_thresholds(probs, labels)

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(self.classes, logits, "irm")
        probs = probabilities(logits)
        mapped = isotonic_apply(probs, self.x, self.y) + TIE_BREAK * probs
        return renormalised(mapped, probs)

    def params(self) -> dict:
        return {"classes": self.classes, "x": self.x.tolist(), "y": self.y.tolist()}

    def load_params(self, params: dict) -> None:
        self.classes = int(params["classes"])
        self.x = np.asarray(params["x"], dtype=np.float64)
        self.y = np.asarray(params["y"], dtype=np.float64)
