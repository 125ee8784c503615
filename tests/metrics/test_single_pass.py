"""The single pass (stats.collect) against a plain float64 reference computed row by row with
argmax, for narrow rows (the column-wise maxima of stats.row_top) and wide rows (argmax)."""

import numpy as np
import pytest

from calbench.errors import InputError
from calbench.metrics import compute_metrics
from calbench.metrics.binning import bin_index
from calbench.metrics.inputs import prepare
from calbench.metrics.stats import NARROW, collect, first_max_is_label, row_top, unpack

# without "confusion" narrow rows take the argmax-free path; with it, every row takes argmax
NEEDS_SETS = [frozenset({"correct", "conf", "binned", "nll", "brier", "classwise"}),
              frozenset({"correct", "conf", "binned", "nll", "brier", "classwise", "confusion"})]


def reference(labels, probs, bins):
    """Per-sample quantities and sums from a float64 copy, by numpy's argmax (first index on ties)."""
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    pred = p.argmax(axis=1)
    conf = p[np.arange(n), pred]
    correct = (pred == labels).astype(np.float64)
    b = bin_index(conf, bins)
    binned = np.stack([np.bincount(b, minlength=bins), np.bincount(b, weights=correct, minlength=bins),
                       np.bincount(b, weights=conf, minlength=bins)])
    onehot = np.eye(k)[labels]
    cece = np.zeros((k, bins))
    for cls in range(k):
        np.add.at(cece[cls], bin_index(p[:, cls], bins), p[:, cls] - onehot[:, cls])
    return {"conf": conf, "correct": correct, "binned": binned, "cece": cece,
            "brier": ((p - onehot) ** 2).sum(), "nll": -np.log(np.maximum(p[np.arange(n), labels], np.finfo(np.float64).tiny)).sum(),
            "confusion": np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)}


def tied_probs(n, k, rng, dtype):
    """Probabilities rounded to a coarse grid, so that many rows have two or more equal maxima."""
    raw = rng.integers(0, 4, size=(n, k)).astype(np.float64) + (rng.random((n, 1)) < 0.1)
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    return (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("needs", NEEDS_SETS)
@pytest.mark.parametrize("k", [2, 3, 10, NARROW, NARROW + 1, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pass_equals_argmax_reference_with_ties(k, dtype, needs):
    rng = np.random.default_rng(k)
    n, bins = 5000, 15
    probs, labels = tied_probs(n, k, rng, dtype), rng.integers(0, k, n)
    ref = reference(labels, probs, bins)
    assert (np.sort(ref["conf"])[1:] == np.sort(ref["conf"])[:-1]).any()  # the case has ties
    st = collect(prepare(labels, probs=probs), bins, needs)
    r, c = unpack(np.sort(st.key))
    order = np.lexsort((ref["correct"], ref["conf"]))
    np.testing.assert_array_equal(r, ref["conf"][order])
    np.testing.assert_array_equal(c, ref["correct"][order])
    np.testing.assert_array_equal(st.binned[:2], ref["binned"][:2])
    np.testing.assert_allclose(st.binned[2], ref["binned"][2], rtol=1e-12)
    np.testing.assert_allclose(st.cece_sums, ref["cece"], rtol=1e-9, atol=1e-9)
    if "confusion" in needs:
        np.testing.assert_array_equal(st.confusion, ref["confusion"])
    assert st.totals["correct"] == ref["correct"].sum()
    assert st.totals["brier"] == pytest.approx(ref["brier"], rel=1e-12)
    assert st.totals["nll"] == pytest.approx(ref["nll"], rel=1e-12)


def test_tied_top_probability_counts_the_first_index_as_the_prediction():
    probs = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.2, 0.4, 0.4]], dtype=np.float32)
    labels = np.array([0, 1, 1, 2])  # first index wins: rows 0 and 2 right, rows 1 and 3 wrong
    assert compute_metrics(labels, probs=probs, keys=("acc",))["acc"] == 0.5
    top, _ = row_top(probs)
    xy = probs[np.arange(4), labels]
    np.testing.assert_array_equal(first_max_is_label(probs, labels, top, xy), [True, False, True, False])


def test_row_top_sums_are_the_row_sums_and_nan_propagates():
    rng = np.random.default_rng(1)
    x = rng.random((300, 7)).astype(np.float32)
    top, sums = row_top(x, with_sums=True)
    np.testing.assert_array_equal(top, x.max(axis=1))
    np.testing.assert_allclose(sums, x.sum(axis=1), rtol=1e-6)
    x[5, 3] = np.nan
    assert np.isnan(row_top(x)[0][5])


@pytest.mark.parametrize("k", [4, 30])
def test_pass_still_rejects_bad_probabilities(k):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(k), 100).astype(np.float32)
    labels = rng.integers(0, k, 100)
    bad = probs.copy()
    bad[17, 1] = np.nan
    with pytest.raises(InputError, match="row 17"):
        compute_metrics(labels, probs=bad, keys=("ece",))
    bad = probs.copy()
    bad[42] *= 1.01
    with pytest.raises(InputError, match="row 42"):
        compute_metrics(labels, probs=bad, keys=("ece",))


def test_metrics_of_the_sorted_key_agree_alone_and_together():
    # aece, ks, aurc and the sweep share one key sorted in place once (stats.sorted_key):
    # every confidence-order metric must give the same value alone, together, and in reverse order
    from calbench.metrics import METRICS

    rng = np.random.default_rng(3)
    probs = tied_probs(3000, 5, rng, np.float32)
    labels = rng.integers(0, 5, 3000)
    keys = [k for k in METRICS.names() if "conf" in METRICS.get(k).needs and not METRICS.get(k).segmentation_only]
    assert {"aece", "ks", "aurc", "e-aurc"} <= set(keys)
    together = compute_metrics(labels, probs=probs, keys=keys)
    backwards = compute_metrics(labels, probs=probs, keys=keys[::-1])
    for key in keys:
        alone = compute_metrics(labels, probs=probs, keys=(key,))[key]
        assert together[key] == pytest.approx(alone, abs=1e-12), key
        assert backwards[key] == pytest.approx(alone, abs=1e-12), key


def test_default_metrics_peak_memory_stays_below_the_input():
    # the target of benchmarks/bench_metrics.py (10M x 10 float32): extra memory <= 1.2x the input;
    # 2M x 10 keeps the test quick while the per-sample arrays still dominate the fixed buffers
    import tracemalloc

    rng = np.random.default_rng(0)
    n, k = 2_000_000, 10
    probs = rng.dirichlet(np.full(k, 0.3), n).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    tracemalloc.start()
    try:
        compute_metrics(labels, probs=probs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1.2 * (probs.nbytes + labels.nbytes), peak / (probs.nbytes + labels.nbytes)


@pytest.mark.parametrize("step", [7, 1000, 1 << 16])
def test_blocked_ks_equals_one_cumsum_over_the_sorted_samples(step):
    # ties of r straddle the block boundaries (probabilities rounded to 3 decimals)
    from calbench.metrics.ks import _ks_point, tie_ends

    rng = np.random.default_rng(step)
    probs = np.round(rng.dirichlet(np.ones(4), 20000), 3)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, 20000)
    st = collect(prepare(labels, probs=probs), 15, frozenset({"conf"}))
    r, c = unpack(np.sort(st.key))
    assert _ks_point(st, step) == float(np.abs(np.cumsum(r - c)[tie_ends(r)]).max() / 20000)
