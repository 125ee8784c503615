"""compute_metrics: every metric of METRICS.md from one chunked pass over the inputs."""

from __future__ import annotations

import numpy as np

from calbench.errors import UnknownNameError
from calbench.metrics import calibration, scoring, smooth
from calbench.metrics.inputs import Prepared, prepare
from calbench.metrics.rows import Rows, summarise
from calbench.metrics.segmentation import miou

METRIC_KEYS: tuple[str, ...] = ("acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece")
ALL_KEYS: tuple[str, ...] = METRIC_KEYS + ("miou",)

# name, direction, one-line definition; "percent": shown x100 in tables like the papers (nll, brier as is)
METRIC_INFO: dict[str, dict] = {
    "acc": {"name": "accuracy", "higher_is_better": True, "percent": True, "definition": "mean of 1(argmax_k p_ik = y_i)"},
    "ece": {"name": "expected calibration error", "higher_is_better": False, "percent": True,
            "definition": "M equal-width (lo, hi] bins of confidence; sum_b (n_b/N) |acc_b - conf_b|"},
    "aece": {"name": "adaptive ECE", "higher_is_better": False, "percent": True,
             "definition": "M equal-mass groups of sorted confidence (sizes differ by <= 1); same weighted sum"},
    "cece": {"name": "classwise ECE", "higher_is_better": False, "percent": True,
             "definition": "mean over classes k of the ECE of p_ik against 1(y_i = k) over all samples"},
    "mce": {"name": "maximum calibration error", "higher_is_better": False, "percent": True,
            "definition": "max over non-empty equal-width bins of |acc_b - conf_b|"},
    "nll": {"name": "negative log-likelihood", "higher_is_better": False, "percent": False,
            "definition": "mean -log p_{i,y_i} (natural log, log_softmax of logits)"},
    "brier": {"name": "Brier score", "higher_is_better": False, "percent": False,
              "definition": "mean_i sum_k (p_ik - 1(y_i = k))^2"},
    "smece": {"name": "smooth ECE", "higher_is_better": False, "percent": True,
              "definition": "smooth calibration error of Blasiok & Nakkiran (2023), relplot's smECE"},
    "sece": {"name": "smooth ECE surrogate (SECE)", "higher_is_better": False, "percent": True,
             "definition": "mean |acc_hat(r_i) - r_i|, Gaussian-kernel (h = 0.01) regression of c on r"},
    "miou": {"name": "mean IoU", "higher_is_better": True, "percent": True,
             "definition": "confusion-matrix mean IoU over classes present, ignore_index excluded"},
}


def resolve_keys(keys, segmentation: bool) -> tuple[str, ...]:
    """The requested keys in canonical order; default METRIC_KEYS (+ miou for segmentation inputs)."""
    if keys is None:
        return ALL_KEYS if segmentation else METRIC_KEYS
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    for k in keys:
        if k not in ALL_KEYS:
            raise UnknownNameError(f"unknown metric '{k}' (valid: {', '.join(ALL_KEYS)})")
    return tuple(k for k in ALL_KEYS if k in keys)


def metrics_from_rows(rows: Rows, keys: tuple[str, ...]) -> dict[str, float]:
    """Point estimates of `keys` from the per-sample quantities."""
    out: dict[str, float] = {}
    r, c, M = rows.conf, rows.correct, rows.bins
    if "ece" in keys or "mce" in keys:
        sums = calibration.binned_sums(r, c, M)
    for k in keys:
        if k == "acc":
            out[k] = scoring.accuracy(c)
        elif k == "ece":
            out[k] = float(calibration.ece_from_sums(*sums))
        elif k == "mce":
            out[k] = float(calibration.mce_from_sums(*sums))
        elif k == "aece":
            out[k] = calibration.aece(r, c, M)
        elif k == "cece":
            out[k] = float(calibration.cece_from_sums(rows.cece_sums, rows.n))
        elif k == "nll":
            out[k] = scoring.nll(rows.nll)
        elif k == "brier":
            out[k] = scoring.brier(rows.brier)
        elif k == "smece":
            out[k] = float(smooth.smece(r, c)[0])
        elif k == "sece":
            out[k] = float(smooth.sece(r, c)[0])
        elif k == "miou":
            out[k] = miou(rows.labels, rows.pred, rows.num_classes)
    return out


def compute_metrics(labels, *, logits=None, probs=None, bins: int = 15, ignore_index: int | None = None,
                    keys=None) -> dict[str, float]:
    """All metrics of METRICS.md as fractions, keyed by METRIC_KEYS (and 'miou' for segmentation).

    labels (N,) int with logits= or probs= (N, K); or segmentation (N, H, W) with (N, K, H, W).
    numpy arrays or torch tensors. Raises InputError for malformed inputs.
    """
    prep = prepare(labels, logits=logits, probs=probs, ignore_index=ignore_index)
    return compute_prepared(prep, bins=bins, keys=keys)


def compute_prepared(prep: Prepared, bins: int = 15, keys=None) -> dict[str, float]:
    if int(bins) < 1:
        from calbench.errors import InputError
        raise InputError(f"bins must be a positive integer, got {bins}")
    keys = resolve_keys(keys, prep.segmentation)
    rows = summarise(prep, int(bins), classwise="cece" in keys)
    return metrics_from_rows(rows, keys)
