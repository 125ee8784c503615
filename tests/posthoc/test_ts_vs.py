"""Temperature scaling recovers a known temperature; vector scaling fits at least as well as TS."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calbench.posthoc import fit_calibrator


def synthetic(temperature, n=20000, k=10, seed=0):
    """Labels drawn from softmax(z); the model reports z * temperature (so the right T is `temperature`)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2.0
    labels = torch.multinomial(F.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5, 40.0])
def test_ts_recovers_a_known_temperature_with_no_cap(true_t):
    logits, labels = synthetic(true_t)
    ts = fit_calibrator("ts", logits.numpy(), labels.numpy())
    assert ts.temperature == pytest.approx(true_t, rel=0.02)


def test_ts_lowers_nll_keeps_argmax_and_divides_in_float64():
    logits, labels = synthetic(3.0, n=5000)
    z32 = logits.float().numpy()
    ts = fit_calibrator("ts", z32, labels.numpy())
    scaled = ts.transform(z32)
    assert scaled.dtype == np.float64
    np.testing.assert_array_equal(scaled, z32.astype(np.float64) / ts.temperature)
    assert F.cross_entropy(torch.from_numpy(scaled), labels) < F.cross_entropy(logits, labels)
    assert np.array_equal(scaled.argmax(1), z32.argmax(1))


def test_torch_and_numpy_inputs_fit_the_same_temperature():
    logits, labels = synthetic(2.0, n=3000)
    a = fit_calibrator("ts", logits.numpy(), labels.numpy())
    b = fit_calibrator("ts", logits, labels)
    assert a.temperature == b.temperature
    out = b.transform(logits.float())
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_vector_scaling_lowers_nll_at_least_as_much_as_ts():
    logits, labels = synthetic(3.0, n=5000)
    skewed = (logits + torch.linspace(-2, 2, 10, dtype=torch.float64)).numpy()
    out = fit_calibrator("vs", skewed, labels.numpy()).transform(skewed)
    assert out.shape == skewed.shape

    def nll(z):
        return F.cross_entropy(torch.from_numpy(np.asarray(z)), labels).item()

    # vector scaling contains temperature scaling (w = 1/T, b = 0), so it fits at least as well
    assert nll(out) <= nll(fit_calibrator("ts", skewed, labels.numpy()).transform(skewed)) + 1e-9
    assert nll(out) < nll(skewed)


def test_empty_validation_split_leaves_the_identity():
    empty, none = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    z = np.arange(8.0).reshape(2, 4)
    for name in ("ts", "vs"):
        np.testing.assert_array_equal(fit_calibrator(name, empty, none).transform(z), z)
