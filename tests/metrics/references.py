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


# --- estimators of the literature (ece_variants, classwise, ks, kde, mmce_metric, selective, longtail) ---

def train_counts(k: int) -> np.ndarray:
    """Long-tailed train counts for the registry-wide tests: 1000 down to 5, geometric (every OLTR
    group is non-empty for k >= 4)."""
    return np.round(1000 * 0.005 ** (np.arange(k) / max(k - 1, 1))).astype(np.int64)


def context(k: int) -> dict:
    """Extra compute_metrics arguments every registry-wide test passes (the long-tail keys need them)."""
    return {"class_counts": train_counts(k)}


def _equal_width_bins(r):
    edges = np.linspace(0, 1, 16)
    return [((r > edges[b]) & (r <= edges[b + 1])) if b else (r <= edges[1]) for b in range(15)]


@hand_case("ece-l2")
def _ece_l2():  # same bins as the ece case: gaps .45 (1 sample) and .955 (2 samples)
    y, s = two_class([0.55, 0.95, 0.96], [0, 1, 1])
    return y, s, np.sqrt((0.45 ** 2 + 2 * 0.955 ** 2) / 3), {}


@hand_case("ece-debiased")
def _ece_debiased():  # bin of .8: n = 4, acc .5 -> (4/5) (0.3^2 - 0.5 * 0.5 / 3); the bin of .55 has one sample: 0
    y, s = two_class([0.8, 0.8, 0.8, 0.8, 0.55], [0, 0, 1, 1, 0])
    return y, s, np.sqrt(0.8 * (0.09 - 0.25 / 3)), {}


@hand_case("ece-sweep")
def _ece_sweep():  # sorted c: 0 1 0 1; b = 2 groups (0,1 | 0,1) monotone, b = 3 (0,1 | 0 | 1): .5 > 0 breaks
    y, s = two_class([0.6, 0.7, 0.8, 0.9], [1, 0, 1, 0])
    return y, s, (abs(1 - 1.3) + abs(1 - 1.7)) / 4, {}


@hand_case("sce")
def _sce():  # the cece case: Nixon et al.'s SCE is Kull et al.'s classwise ECE
    return np.array([0, 2]), {"probs": np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])}, (0.25 + 0.25 + 0.5) / 3, {}


@hand_case("tace")
def _tace():  # class 0: p 1, .5 (y 0, 2) in 2 ranges -> (0 + .5)/2; class 1: one entry .5, y != 1 -> .5;
    # class 2: no entry above 1e-3 -> 0
    return np.array([0, 2]), {"probs": np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])}, (0.25 + 0.5 + 0.0) / 3, {"bins": 2}


@hand_case("ks")
def _ks():  # sorted r - c: .6-1, .7-0, .8-1, .9-1 -> cumsum -.4, .3, .1, 0 -> max .4
    y, s = two_class([0.6, 0.7, 0.8, 0.9], [0, 1, 0, 0])
    return y, s, 0.4 / 4, {}


@hand_case("ks")
def _ks_ties():  # a tie at .7 (one right, one wrong): only its end counts, cumsum .7-1+.7 = .4
    y, s = two_class([0.7, 0.7], [0, 1])
    return y, s, 0.4 / 2, {}


@hand_case("kde-ece")
def _kde_ece():  # one confidence value: the KDE is a point mass at .8 and acc is 3/4
    y, s = two_class([0.8] * 4, [0, 0, 0, 1])
    return y, s, 0.05, {}


@hand_case("mmce")
def _mmce():  # a = c - r = (1 - .6, 0 - .8) = (.4, -.8); k(.6, .8) = exp(-.5)
    y, s = two_class([0.6, 0.8], [0, 1])
    sq = 0.16 + 0.64 - 2 * 0.32 * np.exp(-0.5)
    return y, s, np.sqrt(sq) / 2, {}


def _selective_case():  # by decreasing r: .9 right, .8 wrong, .7 right, .6 wrong: e(k) = 0, 1, 1, 2
    return two_class([0.6, 0.7, 0.8, 0.9], [1, 0, 1, 0])


@hand_case("aurc")
def _aurc():
    y, s = _selective_case()
    return y, s, (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4, {}


@hand_case("aurc")
def _aurc_ties():  # one tie of two (one error): e(1) = 1/2 in expectation, e(2) = 1
    y, s = two_class([0.7, 0.7], [0, 1])
    return y, s, (0.5 / 1 + 1 / 2) / 2, {}


@hand_case("e-aurc")
def _e_aurc():
    y, s = _selective_case()
    return y, s, (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4 - (0.5 + 0.5 * np.log(0.5)), {}


@hand_case("augrc")
def _augrc():  # trapezoids of e/N over coverage steps 1/4: (0+0)/2, (0+.25)/2, (.25+.25)/2, (.25+.5)/2
    y, s = _selective_case()
    return y, s, (0 + 0.125 + 0.25 + 0.375) / 4, {}


@hand_case("risk@cov80")
def _risk80():  # ceil(.8 * 4) = 4 samples: 2 errors
    y, s = _selective_case()
    return y, s, 0.5, {}


@hand_case("risk@cov90")
def _risk90():
    y, s = _selective_case()
    return y, s, 0.5, {}


@hand_case("risk@cov95")
def _risk95():  # ceil(.95 * 20) = 19 of 20: the least confident (an error) left out
    conf = np.linspace(0.99, 0.6, 20)
    y, s = two_class(conf, [0] * 18 + [1, 1])
    return y, s, 1 / 19, {}


def _shot_case():  # classes 0, 1, 2 with 500 / 50 / 5 train images: many, medium, few
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
    return np.array([0, 1, 1, 2]), {"probs": probs}, {"class_counts": [500, 50, 5]}


@hand_case("acc-many")
def _acc_many():
    y, s, kw = _shot_case()
    return y, s, 1.0, kw


@hand_case("acc-medium")
def _acc_medium():  # labels 1, 1: predicted 1 and 0
    y, s, kw = _shot_case()
    return y, s, 0.5, kw


@hand_case("acc-few")
def _acc_few():
    y, s, kw = _shot_case()
    return y, s, 1.0, kw


@hand_case("acc-few")
def _acc_few_terciles():  # counts 9, 5, 1: terciles 11/3 and 19/3 -> class 2 is few, predicted right
    y, s, kw = _shot_case()
    return y, s, 1.0, {"class_counts": [9, 5, 1], "shot_thresholds": "terciles"}


@hand_case("ece-many")
def _ece_many():
    y, s, kw = _shot_case()
    return y, s, 0.1, kw


@hand_case("ece-medium")
def _ece_medium():  # .7 right (bin (.667, .733]), .6 wrong (bin (.533, .6]): (.3 + .6) / 2
    y, s, kw = _shot_case()
    return y, s, 0.45, kw


@hand_case("ece-few")
def _ece_few():
    y, s, kw = _shot_case()
    return y, s, 0.6, kw


@reference("ece-l2", tol=1e-6)
def _ece_l2_ref(labels, probs):
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels),
                                              probs.shape[1], n_bins=15, norm="l2"))


@reference("ece-debiased", tol=1e-12)
def _ece_debiased_ref(labels, probs):
    """Kumar et al.'s per-bin correction written plainly (their package: test_ece_variants.py)."""
    r, c = _conf_correct(labels, probs)
    total = 0.0
    for inside in _equal_width_bins(r):
        m = int(inside.sum())
        if m >= 2:
            acc = c[inside].mean()
            total += m / len(r) * ((acc - r[inside].mean()) ** 2 - acc * (1 - acc) / (m - 1))
    return np.sqrt(max(total, 0.0))


@reference("ece-sweep", tol=1e-12)
def _ece_sweep_ref(labels, probs):
    r, c = _conf_correct(labels, probs)
    order = np.lexsort((c, r))
    best = None
    for b in range(1, len(r) + 1):
        groups = np.array_split(order, b)
        if b > 1 and np.any(np.diff([c[g].mean() for g in groups]) < 0):
            break
        best = sum(abs(c[g].sum() - r[g].sum()) for g in groups) / len(r)
    return best


@reference("sce", tol=1e-12)
def _sce_ref(labels, probs):
    return _cece_ref(labels, probs)


@reference("tace", tol=1e-12)
def _tace_ref(labels, probs):
    k = probs.shape[1]
    total = 0.0
    for cls in range(k):
        keep = probs[:, cls] > 1e-3
        p, t = probs[keep, cls], (labels[keep] == cls).astype(float)
        for g in np.array_split(np.lexsort((t, p)), 15):
            total += abs(t[g].sum() - p[g].sum()) / max(len(p), 1)
    return total / k


@reference("ks", tol=1e-12)
def _ks_ref(labels, probs):
    """Gupta et al.'s recipe: sort by confidence, max |cumsum(r - c)| / N (no ties in these data)."""
    r, c = _conf_correct(labels, probs)
    order = np.argsort(r)
    return float(np.abs(np.cumsum(r[order] - c[order])).max() / len(r))


@reference("kde-ece", tol=2e-4)
def _kde_ece_ref(labels, probs):
    """Zhang et al.'s estimate with the kernel sums evaluated exactly at the grid points (no linear
    binning, no FFT); their KDEpy pipeline itself: test_kde.py."""
    r, c = _conf_correct(labels, probs)
    c = c.astype(bool)
    n, x = len(r), np.linspace(-0.6, 1.6, 2 ** 14)
    s = 3 * np.std(r[c]) * (2 * n) ** -0.2

    def density(d):
        pts = np.concatenate([-d[d < 0.5], d, 2 - d[d >= 0.5]])
        z = np.clip(1 - ((x[:, None] - pts[None, :]) / s) ** 2, 0, None)
        dens = (35 / 32 * z ** 3 / s).sum(1) / len(d)
        return np.where((x > 0) & (x < 1), dens, 0.0)

    p1, p2 = density(r[c]), density(r)
    inside = (x >= 0) & (x <= 1)
    acc = np.minimum(c.mean() * p1 / np.maximum(p2, 1e-300), 1.0)
    keep = inside & (np.maximum(p1, p2) > 1e-6)
    return float(np.trapezoid(np.where(keep, np.abs(x - acc) * p2, 0.0), x) / np.trapezoid(p2, x))


@reference("mmce", tol=1e-12)
def _mmce_ref(labels, probs):
    """The O(N^2) double sum of Kumar et al. (2018, eq. 1), in row blocks."""
    r, c = _conf_correct(labels, probs)
    a = c - r
    total = sum(a[i:i + 500] @ np.exp(-np.abs(r[i:i + 500, None] - r[None, :]) / 0.4) @ a
                for i in range(0, len(r), 500))
    return float(np.sqrt(max(total, 0.0)) / len(r))


def _risks(labels, probs):
    r, c = _conf_correct(labels, probs)
    errors = np.cumsum(1 - c[np.argsort(-r)])
    return errors, np.arange(1, len(r) + 1)


@reference("aurc", tol=1e-12)
def _aurc_ref(labels, probs):
    errors, k = _risks(labels, probs)
    return float(np.mean(errors / k))


@reference("e-aurc", tol=1e-12)
def _e_aurc_ref(labels, probs):
    errors, k = _risks(labels, probs)
    rho = errors[-1] / len(k)
    return float(np.mean(errors / k) - (rho + (1 - rho) * np.log(1 - rho)))


@reference("augrc", tol=1e-12)
def _augrc_ref(labels, probs):
    errors, k = _risks(labels, probs)
    n = len(k)
    return float(np.trapezoid(np.r_[0.0, errors / n], np.r_[0.0, k / n]))


def _risk_at(labels, probs, q):
    errors, k = _risks(labels, probs)
    m = int(np.ceil(q * len(k) - 1e-9))
    return float(errors[m - 1] / m)


for _q in (80, 90, 95):
    reference(f"risk@cov{_q}", tol=1e-12)(lambda labels, probs, q=_q: _risk_at(labels, probs, q / 100))


def _shot_ref(labels, probs, group: int, what: str):
    counts = train_counts(probs.shape[1])
    shot = np.where(counts > 100, 0, np.where(counts < 20, 2, 1))
    keep = shot[labels] == group
    r, c = _conf_correct(labels[keep], probs[keep])
    if what == "acc":
        return float(c.mean())
    return float(sum(abs(c[b].sum() - r[b].sum()) for b in _equal_width_bins(r)) / len(r))


for _g, _name in enumerate(("many", "medium", "few")):
    for _what in ("acc", "ece"):
        reference(f"{_what}-{_name}", tol=1e-12)(
            lambda labels, probs, g=_g, w=_what: _shot_ref(labels, probs, g, w))
