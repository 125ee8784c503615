"""ece / mce / smece against torchmetrics, netcal and relplot (docs/metrics.md, 'reference implementations')."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from calbench.metrics import compute_metrics
from calbench.metrics.binning import bin_edges

from .conftest import softmax, synth


def _off_edges(probs):
    r = probs.max(1)
    edges = bin_edges(15)
    return np.min(np.abs(r[:, None] - edges[None, :])) > 1e-6


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 3), (2, 100)])
def test_ece_mce_equal_torchmetrics(seed, k):
    logits, labels = synth(4000, k, seed)
    probs = softmax(logits)
    assert _off_edges(probs)
    ours = compute_metrics(labels, probs=probs, keys=("ece", "mce"))
    p, y = torch.tensor(probs, dtype=torch.float32), torch.tensor(labels)
    tm_ece = float(multiclass_calibration_error(p, y, k, n_bins=15, norm="l1"))
    tm_mce = float(multiclass_calibration_error(p, y, k, n_bins=15, norm="max"))
    assert abs(ours["ece"] - tm_ece) < 1e-6
    assert abs(ours["mce"] - tm_mce) < 1e-6


@pytest.mark.parametrize("seed,k", [(0, 10), (3, 5)])
def test_ece_equals_netcal(seed, k):
    from netcal.metrics import ECE

    logits, labels = synth(3000, k, seed)
    probs = softmax(logits)
    assert len(np.unique(labels)) >= 3
    ours = compute_metrics(labels, logits=logits, keys=("ece",))["ece"]
    assert abs(ours - float(ECE(bins=15).measure(probs, labels))) < 1e-9


@pytest.mark.parametrize("seed,scale", [(0, 3.0), (1, 1.0), (2, 0.3)])
def test_smece_equals_relplot(seed, scale):
    import relplot

    logits, labels = synth(3000, 10, seed, scale)
    probs = softmax(logits)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    ours = compute_metrics(labels, probs=probs, keys=("smece",))["smece"]
    assert abs(ours - float(relplot.smECE(conf, correct))) < 2e-3


def test_smece_small_bandwidth_grid_matches_relplot():
    """Well-calibrated data drives relplot's bandwidth below 0.01, where its grid grows: calbench
    ports the grid algorithm, so it agrees far inside the 2e-3 allowed for an exact kernel integral."""
    import relplot

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    labels = (rng.random(20000) >= conf).astype(int)
    ref, width = relplot.smECE(conf, (labels == 0).astype(float), return_width=True)
    assert width < 0.01
    ours = compute_metrics(labels, probs=np.stack([conf, 1 - conf], 1), keys=("smece",))["smece"]
    assert abs(ours - ref) < 1e-6
