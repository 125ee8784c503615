"""tace's class orders built a few classes at a time (classwise.ClassOrders with the C kernel) equal
the NumPy build of the whole (K, n) argsort, and the bootstrap's tace with them."""

import numpy as np
import pytest

from calbench import native
from calbench.metrics import classwise as cw

from .conftest import softmax


def _probs(n, k, seed):
    rng = np.random.default_rng(seed)
    logits = np.round(rng.normal(size=(n, k)) * 2.0) * 1.5  # exact ties in p
    logits[:, k - 1] = -30.0  # a class below the threshold everywhere
    probs = softmax(logits)
    return probs, (probs.cumsum(1) > rng.random((n, 1))).argmax(1)


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 7])
@pytest.mark.parametrize("indices", [True, False])
def test_chunked_orders_equal_the_whole_argsort(monkeypatch, per_chunk, indices):
    if not native.enabled() or native._compiler() is None or cw._kernel() is None:
        pytest.skip("no C kernel: only the NumPy build exists")
    probs, labels = _probs(300, 7, seed=per_chunk)
    monkeypatch.setattr(cw, "ORDER_CHUNK", per_chunk * 300)  # several chunks, the last one short
    fast = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD, indices=indices)
    monkeypatch.setattr(cw, "_kernel", lambda: None)
    slow = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD, indices=indices)
    assert (fast.order is None) == (not indices)
    if indices:
        assert fast.order.dtype == np.int32
        np.testing.assert_array_equal(fast.order, slow.order)
    np.testing.assert_array_equal(fast.gap, slow.gap)
    np.testing.assert_array_equal(fast.start, slow.start)
    W = np.random.default_rng(0).poisson(1.0, (20, 300)).astype(np.float64) if indices else None
    np.testing.assert_array_equal(cw.tace_of(fast, W, 15), cw.tace_of(slow, W, 15))


@pytest.mark.parametrize("m", [0, 1, 2, 7, 14, 15, 16, 44, 301])
@pytest.mark.parametrize("bins", [1, 3, 15])
def test_unit_gap_sum_is_class_gap_sum_with_unit_counts_bit_for_bit(m, bins):
    rng = np.random.default_rng(m * 31 + bins)
    gap = (rng.random(m) < 0.3) - rng.random(m) * 0.4
    gap[: m // 3] = np.round(gap[: m // 3], 1)  # repeated values
    want = cw.class_gap_sum(np.ones((1, m)), gap, bins)
    got = cw.unit_gap_sum(gap, bins)
    assert got.shape == want.shape == (1,)
    assert got.tobytes() == want.tobytes()
