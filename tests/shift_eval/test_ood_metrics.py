"""OOD detection metrics against scikit-learn and a hand-computed case; every registered score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from calbench.errors import InputError
from calbench.metrics.ood import OOD_METRICS, OOD_SCORES, ood_metrics, ood_scores


def _sklearn(in_scores, out_scores):
    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    s = np.r_[in_scores, out_scores]
    return {"auroc": roc_auc_score(y, s), "aupr_in": average_precision_score(y, s),
            "aupr_out": average_precision_score(1 - y, -s)}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_aupr_equal_scikit_learn(seed, ties):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(1.0, 1.0, 50 + seed * 7), rng.normal(0.0, 1.0, 30 + seed * 11)
    if ties:   # coarse scores: many ties within and across the two sets
        a, b = np.round(a), np.round(b)
    ours, ref = ood_metrics(a, b), _sklearn(a, b)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_fpr95_hand_case():
    # 20 in-distribution scores 1..20: 95% acceptance needs 19 of them -> threshold 2.
    # OOD scores: 0, 1, 2, 3 are accepted when >= 2: two of four -> 0.5.
    in_scores = np.arange(1, 21, dtype=float)
    assert ood_metrics(in_scores, [0.0, 1.0, 2.0, 3.0], keys=["fpr95"])["fpr95"] == 0.5
    # a perfect separation accepts no OOD sample
    assert ood_metrics(in_scores, [-5.0, 0.5], keys=["fpr95"])["fpr95"] == 0.0
    # every OOD above every in-distribution score: all accepted
    assert ood_metrics(in_scores, [30.0, 40.0], keys=["fpr95"])["fpr95"] == 1.0


def test_fpr95_against_roc_curve():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    a, b = rng.normal(2, 1, 400), rng.normal(0, 1, 300)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(400), np.zeros(300)], np.r_[a, b])
    assert ood_metrics(a, b, keys=["fpr95"])["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])


def test_perfect_and_reversed_detection():
    m = ood_metrics([5.0, 6.0, 7.0], [1.0, 2.0])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    assert ood_metrics([1.0, 2.0], [5.0, 6.0], keys=["auroc"])["auroc"] == 0.0


def test_every_metric_refuses_an_empty_or_non_finite_side():
    for key in OOD_METRICS.names():
        with pytest.raises(InputError):
            ood_metrics([], [1.0], keys=[key])
        with pytest.raises(InputError):
            ood_metrics([1.0, np.nan], [1.0], keys=[key])


def test_scores_by_hand_and_higher_means_surer():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    s = ood_scores(logits)
    assert set(s) == set(OOD_SCORES.names())
    p = np.exp(2.0) / (np.exp(2.0) + 2.0)
    assert s["msp"] == pytest.approx([p, 1 / 3])
    assert s["max_logit"] == pytest.approx([2.0, 0.0])
    assert s["energy"] == pytest.approx([np.log(np.exp(2.0) + 2.0), np.log(3.0)])
    q = np.array([p, (1 - p) / 2, (1 - p) / 2])
    assert s["entropy"] == pytest.approx([(q * np.log(q)).sum(), np.log(1 / 3)])
    for name, values in s.items():      # the peaked row is the more in-distribution one for every score
        assert values[0] > values[1], name


def test_scores_are_stable_for_large_logits():
    s = ood_scores(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
    for name, values in s.items():
        assert np.isfinite(values).all(), name
