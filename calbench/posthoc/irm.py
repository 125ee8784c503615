"""Multi-class isotonic regression, IRM (Zhang, Kailkhura & Han, "Mix-n-Match: Ensemble and
Compositional Methods for Uncertainty Calibration in Deep Learning", ICML 2020, Sec. 3.2).

One non-decreasing map is fitted to all N x K validation pairs (p_ik, 1[y_i = k]) pooled, so every
class shares it (unlike one-vs-rest isotonic, which fits K maps). As in the authors' code
(`mir_calibrate`), 1e-9 * p is added to the mapped values, which makes the map strictly increasing
(ties inside a constant run keep the input's order), and the row is then renormalised so it is a
probability vector, as the paper states.
"""

from __future__ import annotations

import numpy as np

from calbench.posthoc.base import Calibrator
from calbench.posthoc.hb import check_classes, probabilities, renormalised
from calbench.posthoc.isotonic import isotonic_apply, isotonic_thresholds
from calbench.posthoc.registry import POSTHOC

TIE_BREAK = 1e-9  # the authors' 1e-9 * p term


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
        targets = np.zeros_like(probs)
        targets[np.arange(len(labels)), labels] = 1.0
        self.x, self.y = isotonic_thresholds(probs.ravel(), targets.ravel())

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
