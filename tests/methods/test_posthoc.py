"""Temperature scaling recovers a known temperature; vector scaling fits; both keep shapes and types."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calbench.methods import fit_posthoc


def synthetic(temperature, n=20000, k=10, seed=0):
    """Labels drawn from softmax(z); the model reports z * temperature (so the right T is `temperature`)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2.0
    labels = torch.multinomial(F.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z * temperature, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5, 40.0])
def test_ts_recovers_a_known_temperature_with_no_cap(true_t):
    logits, labels = synthetic(true_t)
    ts = fit_posthoc("ts", logits, labels)
    assert ts.temperature == pytest.approx(true_t, rel=0.02)


def test_ts_lowers_nll_keeps_argmax_and_types():
    logits, labels = synthetic(3.0, n=5000)
    ts = fit_posthoc("ts", logits.float(), labels)
    scaled = ts.transform(logits.float())
    assert scaled.dtype == torch.float32
    assert F.cross_entropy(scaled, labels) < F.cross_entropy(logits.float(), labels)
    assert torch.equal(scaled.argmax(1), logits.float().argmax(1))
    as_numpy = ts.transform(logits.numpy())
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, logits.numpy() / ts.temperature)


def test_ts_accepts_numpy_inputs():
    logits, labels = synthetic(2.0, n=3000)
    a = fit_posthoc("ts", logits.numpy(), labels.numpy()).temperature
    b = fit_posthoc("ts", logits, labels).temperature
    assert a == pytest.approx(b, rel=1e-9)


def test_vector_scaling_lowers_nll():
    logits, labels = synthetic(3.0, n=5000)
    skewed = logits + torch.linspace(-2, 2, 10, dtype=torch.float64)
    vs = fit_posthoc("vs", skewed, labels)
    out = vs.transform(skewed)
    assert out.shape == skewed.shape
    ts_nll = F.cross_entropy(fit_posthoc("ts", skewed, labels).transform(skewed), labels)
    # vector scaling contains temperature scaling (w = 1/T, b = 0), so it fits at least as well
    assert F.cross_entropy(out, labels) <= ts_nll + 1e-9
    assert F.cross_entropy(out, labels) < F.cross_entropy(skewed, labels)


def test_unknown_posthoc_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'ts'"):
        fit_posthoc("tss", torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
