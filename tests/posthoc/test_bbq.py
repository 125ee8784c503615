"""bbq: the paper's Bayesian score and model average by hand (math.lgamma), agreement with netcal's BBQ
(which scores equal-width histograms by BIC instead, so only approximately), bad hyper-parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator
from calbench.posthoc.bbq import bin_range


def two_class_logits(conf):
    return np.stack([np.log(conf), np.log1p(-conf)], axis=1)


def test_hand_computed_model_average():
    """8 confidences, C = 1.5: N^(1/3) = 2, so B runs over floor(2/1.5) = 1 .. ceil(3) = 3 bins."""
    conf = np.array([0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    correct = np.array([0, 1, 0, 1, 1, 1, 0, 1])
    assert list(bin_range(8, 1.5)) == [1, 2, 3]
    runs = {1: [list(range(8))], 2: [list(range(4)), list(range(4, 8))],
            3: [[0, 1, 2], [3, 4, 5], [6, 7]]}
    edges = {1: [], 2: [0.725], 3: [0.675, 0.825]}
    log_ml, values = {}, {}
    for b, members in runs.items():
        bounds = [0.0] + edges[b] + [1.0]
        strength = 2.0 / b
        log_ml[b], values[b] = 0.0, []
        for i, rows in enumerate(members):
            n, m = len(rows), int(correct[rows].sum())
            mid = (bounds[i] + bounds[i + 1]) / 2
            a, c = strength * mid, strength * (1 - mid)
            log_ml[b] += (math.lgamma(strength) - math.lgamma(n + strength) + math.lgamma(m + a) - math.lgamma(a)
                          + math.lgamma(n - m + c) - math.lgamma(c))
            values[b].append((m + a) / (n + strength))
    top = max(log_ml.values())
    weight = {b: math.exp(v - top) for b, v in log_ml.items()}
    total = sum(weight.values())
    query = 0.7  # bin 0 of B = 1, bin 0 of B = 2, bin 1 of B = 3
    expected = sum(weight[b] / total * values[b][i] for b, i in ((1, 0), (2, 0), (3, 1)))
    bbq = fit_calibrator("bbq", two_class_logits(conf), np.where(correct == 1, 0, 1), range_factor=1.5)
    assert sorted(w for w, _, _ in bbq.models) == pytest.approx(sorted(w / total for w in weight.values()))
    assert bbq.calibrated_confidence(np.array([query]))[0] == pytest.approx(expected, abs=1e-12)


def test_agrees_with_netcal_bbq_on_a_known_calibration_curve():
    """True P(correct | s) = s**2; both BBQs recover it to a few points and agree with each other."""
    from netcal.binning import BBQ

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = (rng.random(conf.size) < conf ** 2).astype(int)
    ours = fit_calibrator("bbq", two_class_logits(conf), 1 - correct)
    grid = np.linspace(0.55, 0.95, 9)
    theirs = BBQ().fit(conf, correct).transform(grid)
    mine = ours.calibrated_confidence(grid)
    assert np.abs(mine - grid ** 2).max() < 0.05
    assert np.abs(mine - theirs).max() < 0.06


@pytest.mark.parametrize("hparams, key", [({"range_factor": 0.5}, "bbq.range_factor"),
                                          ({"prior_strength": 0.0}, "bbq.prior_strength")])
def test_bad_hyper_parameter_names_the_key(hparams, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_calibrator("bbq", **hparams)
