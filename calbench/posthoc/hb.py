"""Histogram binning (Zadrozny & Elkan, "Obtaining calibrated probability estimates from decision trees
and naive Bayesian classifiers", ICML 2001; multi-class one-vs-rest: Zadrozny & Elkan, KDD 2002;
top-label: Gupta & Ramdas, "Top-label calibration and multiclass-to-binary reductions", ICLR 2022).

A score is replaced by the validation frequency of the event in its bin. `mode` chooses the event:
"top-label" bins the top confidence against "the prediction is correct"; "class-wise" bins every
class probability p_k against "the label is k" and renormalises the row. Bins are equal-mass by
default, with the edges of Kumar et al. (NeurIPS 2019, `uncertainty-calibration`'s `get_equal_bins`):
the sorted validation scores are split into `bins` near-equal runs (numpy's array_split) and an edge
lies half way between the last score of a run and the first of the next; a score equal to an edge
belongs to the lower bin; an empty bin (ties) maps to its midpoint. "equal-width" bins are the
edges k / bins (netcal's `HistogramBinning(equal_intervals=True)` convention).

The module also holds the 1-D binning and top-label helpers the other binning calibrators share.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from calbench.errors import ConfigError, InputError
from calbench.posthoc.base import Calibrator
from calbench.posthoc.registry import POSTHOC

MODES = ("top-label", "class-wise")
BINNINGS = ("equal-mass", "equal-width")


def check_hparam(ok: bool, where: str, expected: str, value) -> None:
    """ConfigError "<calibrator>.<key>: expected <...>, got <value>" unless `ok`."""
    if not ok:
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def check_classes(fitted: int, logits: np.ndarray, name: str) -> None:
    """InputError when test logits have another class count than the validation logits."""
    if logits.ndim != 2 or logits.shape[1] != fitted:
        raise InputError(f"{name}: fitted on {fitted} classes, got logits of shape {logits.shape}")


def probabilities(logits: np.ndarray) -> np.ndarray:
    """softmax in float64 (the probabilities every probability-space calibrator starts from)."""
    return softmax(logits, axis=1)


def top_label(probs: np.ndarray, labels: np.ndarray | None = None):
    """(confidence, correct) of the arg-max prediction; correct is None without labels."""
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(probs)), pred]
    return conf, (None if labels is None else (pred == labels).astype(np.float64))


def with_top_confidence(probs: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """A probability matrix whose arg-max entry is `confidence` and whose other entries share 1 -
    confidence in proportion to their input probabilities (uniformly when they are all zero).

    Why: top-label calibrators calibrate only the confidence, but nll / brier / class-wise metrics
    need a full row; proportional sharing keeps the ratios between the other classes. The arg-max
    may move when the new confidence is below a rescaled runner-up, so these calibrators do not
    declare `preserves_argmax`.
    """
    n, k = probs.shape
    rows, top = np.arange(n), probs.argmax(axis=1)
    confidence = np.clip(confidence, 0.0, 1.0)
    out = probs.copy()
    out[rows, top] = 0.0
    rest = out.sum(axis=1, keepdims=True)  # summed directly: 1 - p_top cancels for confident rows
    out = np.divide(out, rest, out=np.zeros_like(out), where=rest > 0) * (1.0 - confidence)[:, None]
    rest = rest[:, 0]
    empty = rest <= 0
    if k > 1 and np.any(empty):
        out[empty] = ((1.0 - confidence[empty]) / (k - 1))[:, None]
    out[rows, top] = confidence
    return out


def inner_edges(scores: np.ndarray, bins: int, binning: str) -> np.ndarray:
    """The bins - 1 (or fewer, for few scores) inner bin edges of 1-D scores in [0, 1]."""
    if binning == "equal-width":
        return np.linspace(0.0, 1.0, bins + 1)[1:-1]
    ordered = np.sort(scores)
    parts = min(bins, ordered.size)
    if parts <= 1:
        return np.zeros(0)
    sizes = np.full(parts, ordered.size // parts)
    sizes[: ordered.size % parts] += 1
    ends = np.cumsum(sizes)[:-1]
    return (ordered[ends - 1] + ordered[ends]) / 2.0


def bin_values(scores: np.ndarray, targets: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean target per bin (a score on an edge is in the lower bin); an empty bin gets its midpoint."""
    index = np.searchsorted(edges, scores, side="left")
    count = np.bincount(index, minlength=edges.size + 1)
    total = np.bincount(index, weights=targets, minlength=edges.size + 1)
    bounds = np.concatenate([[0.0], edges, [1.0]])
    midpoints = (bounds[:-1] + bounds[1:]) / 2.0
    return np.divide(total, count, out=midpoints, where=count > 0)


def apply_bins(scores: np.ndarray, edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return values[np.searchsorted(edges, scores, side="left")]


@POSTHOC.register("hb", description="Histogram binning (top-label or class-wise), equal-mass bins.",
                  paper="Zadrozny & Elkan, ICML 2001")
class HistogramBinning(Calibrator):
    """Top-label or class-wise histogram binning on softmax probabilities; outputs probabilities.

    Top-label: the arg-max entry becomes its bin's validation accuracy and the other classes share
    the rest (`with_top_confidence`). Class-wise: each p_k becomes the frequency of label k in its
    class-k bin, then the row is divided by its sum (a row whose values are all zero keeps its
    softmax probabilities). Neither keeps the arg-max in general.
    """

    output = "probs"
    preserves_argmax = False

    def __init__(self, *, bins: int = 15, mode: str = "top-label", binning: str = "equal-mass") -> None:
        check_hparam(bins >= 1, "hb.bins", "an integer >= 1", bins)
        check_hparam(mode in MODES, "hb.mode", " or ".join(MODES), mode)
        check_hparam(binning in BINNINGS, "hb.binning", " or ".join(BINNINGS), binning)
        self.bins, self.mode, self.binning = bins, mode, binning
        self.edges: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.classes = 0

    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        probs = probabilities(logits)
        self.classes = probs.shape[1]
        if self.mode == "top-label":
            columns = [top_label(probs, labels)]
        else:
            columns = [(probs[:, k], (labels == k).astype(np.float64)) for k in range(self.classes)]
        self.edges = [inner_edges(s, self.bins, self.binning) for s, _ in columns]
        self.values = [bin_values(s, t, e) for (s, t), e in zip(columns, self.edges)]

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        check_classes(self.classes, logits, "hb")
        probs = probabilities(logits)
        if self.mode == "top-label":
            confidence, _ = top_label(probs)
            return with_top_confidence(probs, apply_bins(confidence, self.edges[0], self.values[0]))
        binned = np.empty_like(probs)
        for k in range(self.classes):
            binned[:, k] = apply_bins(probs[:, k], self.edges[k], self.values[k])
        return renormalised(binned, probs)

    def params(self) -> dict:
        return {"classes": self.classes, "edges": [e.tolist() for e in self.edges],
                "values": [v.tolist() for v in self.values]}

    def load_params(self, params: dict) -> None:
        self.classes = int(params["classes"])
        self.edges = [np.asarray(e, dtype=np.float64) for e in params["edges"]]
        self.values = [np.asarray(v, dtype=np.float64) for v in params["values"]]


def renormalised(scores: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows of non-negative `scores` divided by their sums; a row summing to zero takes `fallback`'s."""
    scores = np.clip(scores, 0.0, None)
    total = scores.sum(axis=1, keepdims=True)
    out = np.divide(scores, total, out=np.array(fallback, dtype=np.float64), where=total > 0)
    return out
