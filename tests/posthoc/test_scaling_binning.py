"""scaling-binning: each step against Kumar et al.'s `uncertainty-calibration` (Platt scaling as their
`get_platt_scaler`, bins and bin values as their `get_equal_bins` / `get_discrete_calibrator`, which is
what their PlattBinnerMarginalCalibrator chains), the validation split, bad hyper-parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from calbench.errors import ConfigError
from calbench.posthoc import create_calibrator, fit_calibrator


def overconfident(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.2
    return 3.0 * z, labels


def test_each_step_equals_the_package():
    """The package fits Platt and bins on the same rows; calbench uses the two halves of a seeded
    split, so the package's functions are called here on calbench's halves. Platt: the package uses
    scikit-learn's L-BFGS (tolerance 1e-4), calbench Newton to 1e-12, hence 1e-4 on the scaled values."""
    from calibration import utils

    val, val_labels = overconfident(seed=1)
    test, _ = overconfident(seed=2)
    sb = fit_calibrator("scaling-binning", val, val_labels, bins=10)
    scale_rows, bin_rows = sb.split(len(val))
    assert not set(scale_rows) & set(bin_rows) and len(scale_rows) + len(bin_rows) == len(val)
    p_val, p_test = softmax(val, axis=1), softmax(test, axis=1)
    ours_scaled = 1 / (1 + np.exp(-(np.log(p_test / (1 - p_test)) * sb.slopes + sb.intercepts)))
    marginals = np.empty_like(p_test)
    for c in range(p_val.shape[1]):
        platt = utils.get_platt_scaler(p_val[scale_rows, c], (val_labels[scale_rows] == c).astype(int))
        np.testing.assert_allclose(platt(p_test[:, c]), ours_scaled[:, c], atol=1e-4)
        scaled_bin_rows = 1 / (1 + np.exp(-(np.log(p_val[bin_rows, c] / (1 - p_val[bin_rows, c])) * sb.slopes[c]
                                            + sb.intercepts[c])))
        discrete = utils.get_discrete_calibrator(scaled_bin_rows, utils.get_equal_bins(scaled_bin_rows, num_bins=10))
        marginals[:, c] = discrete(ours_scaled[:, c])
    np.testing.assert_allclose(sb.marginals(p_test), marginals, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sb.transform(test), marginals / marginals.sum(1, keepdims=True), atol=1e-12)


def test_outputs_take_at_most_bins_values_per_class():
    val, val_labels = overconfident(seed=3)
    test, _ = overconfident(seed=4)
    sb = fit_calibrator("scaling-binning", val, val_labels, bins=7)
    marginals = sb.marginals(softmax(test, axis=1))
    assert all(np.unique(marginals[:, c]).size <= 7 for c in range(marginals.shape[1]))


def test_another_seed_is_another_split():
    val, val_labels = overconfident(seed=5)
    a = fit_calibrator("scaling-binning", val, val_labels, seed=0)
    b = fit_calibrator("scaling-binning", val, val_labels, seed=1)
    assert a.state() != b.state()


@pytest.mark.parametrize("hparams, key", [({"bins": 0}, "scaling-binning.bins"),
                                          ({"seed": -1}, "scaling-binning.seed")])
def test_bad_hyper_parameter_names_the_key(hparams, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        create_calibrator("scaling-binning", **hparams)
