"""Per-metric hand-computed cases and reference implementations, keyed by metric key.

A new metric adds one `@hand_case(key)` (a small input whose value was worked out by hand) and one
`@reference(key, tol=...)` (the value from an independent implementation: a published package where
one exists, otherwise the textbook formula written plainly). test_registry_wide.py fails for any
registered metric that has neither.

hand_case functions return (labels, {"probs"|"logits": scores}, expected value, compute kwargs).
reference functions take (labels, probs) as float64 numpy arrays and return the reference value.
"""

from __future__ import annotations

import numpy as np

HAND_CASES: dict[str, list] = {}
REFERENCES: dict[str, tuple] = {}


def hand_case(key: str):
    def add(fn):
        HAND_CASES.setdefault(key, []).append(fn)
        return fn
    return add


def reference(key: str, tol: float):
    def add(fn):
        REFERENCES[key] = (fn, tol)
        return fn
    return add


def two_class(conf, labels):
    conf = np.asarray(conf, dtype=np.float64)
    return np.asarray(labels), {"probs": np.stack([conf, 1.0 - conf], axis=1)}


def _conf_correct(labels, probs):
    return probs.max(1), (probs.argmax(1) == labels).astype(np.float64)


# --- hand cases -------------------------------------------------------------------------------

@hand_case("acc")
def _acc():
    y, s = two_class([0.9, 0.6, 0.2], [0, 1, 1])  # predictions 0, 0, 1: two right
    return y, s, 2 / 3, {}


@hand_case("ece")
def _ece():  # bin (0.533, 0.6]: conf .55, right -> gap .45; last bin: .95, .96 both wrong -> 1.91
    y, s = two_class([0.55, 0.95, 0.96], [0, 1, 1])
    return y, s, (0.45 + 1.91) / 3, {}


@hand_case("mce")
def _mce():
    y, s = two_class([0.55, 0.95, 0.96], [1, 0, 0])  # bin (.533, .6]: wrong at .55; last: right twice
    return y, s, 0.55, {}


@hand_case("aece")
def _aece():  # 2 groups of sizes 3 and 2 over the sorted confidences; correct 0, 1, 1 | 1, 0
    y, s = two_class([0.55, 0.6, 0.7, 0.9, 0.95], [1, 0, 0, 0, 1])
    return y, s, (abs(2 - 1.85) + abs(1 - 1.85)) / 5, {"bins": 2}


@hand_case("cece")
def _cece():  # class 0: (0 + 0.5)/2; class 1: (0 + 0.5)/2; class 2: p = 0 twice, one positive -> 1/2
    return np.array([0, 2]), {"probs": np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])}, (0.25 + 0.25 + 0.5) / 3, {}


@hand_case("nll")
def _nll():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    return np.array([0, 2]), {"probs": probs}, (-np.log(0.7) - np.log(0.3)) / 2, {}


@hand_case("nll")
def _nll_logits():  # log_softmax, not the log of a rounded probability
    return np.array([1, 1]), {"logits": np.array([[1000.0, 0.0], [0.0, 1000.0]])}, 500.0, {}


@hand_case("brier")
def _brier():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    return np.array([0, 2]), {"probs": probs}, (0.09 + 0.04 + 0.01 + 0.04 + 0.25 + 0.49) / 2, {}


@hand_case("smece")
def _smece():  # every prediction right with confidence 1: no calibration error at any bandwidth
    y, s = two_class([1.0] * 6, [0] * 6)
    return y, s, 0.0, {}


@hand_case("sece")
def _sece():  # one confidence value 0.8, right 3 times of 4: acc_hat = 0.75 everywhere
    y, s = two_class([0.8] * 4, [0, 0, 0, 1])
    return y, s, 0.05, {}


@hand_case("miou")
def _miou():  # kept pixels: (y0 p0), (y1 p0), (y1 p1): IoU0 = 1/2, IoU1 = 1/2
    labels = np.array([[[0, 1], [1, 255]]])
    logits = np.zeros((1, 2, 2, 2))
    logits[0, 0] = [[5, 5], [-5, 5]]
    return labels, {"logits": logits}, 0.5, {"ignore_index": 255}


# --- references -------------------------------------------------------------------------------

@reference("acc", tol=1e-15)
def _acc_ref(labels, probs):
    from sklearn.metrics import accuracy_score

    return accuracy_score(labels, probs.argmax(1))


@reference("ece", tol=1e-6)
def _ece_ref(labels, probs):
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels),
                                              probs.shape[1], n_bins=15, norm="l1"))


@reference("mce", tol=1e-6)
def _mce_ref(labels, probs):
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels),
                                              probs.shape[1], n_bins=15, norm="max"))


@reference("aece", tol=1e-12)
def _aece_ref(labels, probs):
    """Sort by (r, c); np.array_split makes the first n % M groups one larger, as docs/metrics.md says."""
    r, c = _conf_correct(labels, probs)
    order = np.lexsort((c, r))
    groups = np.array_split(order, 15)
    return sum(abs(c[g].sum() - r[g].sum()) for g in groups) / len(r)


@reference("cece", tol=1e-12)
def _cece_ref(labels, probs):
    n, k = probs.shape
    edges = np.linspace(0, 1, 16)
    total = 0.0
    for cls in range(k):
        p, t = probs[:, cls], (labels == cls).astype(float)
        for b in range(15):
            inside = (p > edges[b]) & (p <= edges[b + 1]) if b else (p <= edges[1])
            total += abs((p[inside] - t[inside]).sum()) / n
    return total / k


@reference("nll", tol=1e-9)
def _nll_ref(labels, probs):
    import torch

    return float(torch.nn.functional.nll_loss(torch.log(torch.tensor(probs)), torch.tensor(labels)))


@reference("brier", tol=1e-12)
def _brier_ref(labels, probs):
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


@reference("smece", tol=2e-3)
def _smece_ref(labels, probs):
    import relplot

    return float(relplot.smECE(*_conf_correct(labels, probs)))


@reference("sece", tol=3e-4)
def _sece_ref(labels, probs):
    """The exact O(n^2) Nadaraya-Watson regression with a Gaussian kernel, bandwidth 0.01."""
    r, c = _conf_correct(labels, probs)
    w = np.exp(-0.5 * ((r[:, None] - r[None, :]) / 0.01) ** 2)
    return float(np.mean(np.abs(w @ c / w.sum(1) - r)))


@reference("miou", tol=1e-12)
def _miou_ref(labels, probs):
    from sklearn.metrics import jaccard_score

    pred = probs.argmax(1)
    present = np.union1d(labels, pred)
    return float(jaccard_score(labels, pred, labels=present, average="macro"))
