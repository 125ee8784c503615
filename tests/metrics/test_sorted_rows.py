"""The C walks of sorted_rows.c against the NumPy paths they replace and the explicit resample.

Each metric that reads the samples in confidence order (ece's bins, aece, ks, the selective
metrics, mmce, ece-sweep) is computed three ways on count rows of every kind (bootstrap rows,
jackknife rows, totals below and above n, counts 0..4) with tied confidences, pure and mixed runs:
by the kernel, by the NumPy path (the kernel switched off), and on the explicit multiset of each row.
"""

import numpy as np
import pytest

from calbench.metrics import METRICS
from calbench.metrics import sorted_rows
from calbench.metrics.bootstrap import Resampler, bootstrap_indices, counts_from_indices
from calbench.metrics.inputs import prepare

from .conftest import synth
from .test_weighted_paths import uneven_rows

KEYS = ("ece", "mce", "ece-l2", "ece-debiased", "aece", "ks", "aurc", "e-aurc", "augrc", "risk@cov80",
        "risk@cov90", "risk@cov95", "mmce", "ece-sweep")

needs_kernel = pytest.mark.skipif(sorted_rows._kernel() is None, reason="C kernel not built here")


def _rows(n: int, seed: int) -> np.ndarray:
    idx = bootstrap_indices(n, 4, seed)
    return np.vstack([uneven_rows(n, seed), counts_from_indices(idx, n)])


def _cases():
    logits, labels = synth(600, 5, seed=3)
    yield "distinct", logits, labels
    yield "ties", np.round(logits, 1), labels          # mixed runs across group and bin ends
    yield "coarse", np.round(logits * 0.3, 0), labels  # few long runs


def _numpy(rs, key, W, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(sorted_rows, "_kernel", lambda: None)
        return rs.stats(W)[key]


@needs_kernel
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("case", ["distinct", "ties", "coarse"])
def test_kernel_equals_numpy_path_and_explicit_resample(key, case, monkeypatch):
    assert key in METRICS
    _, logits, labels = next(c for c in _cases() if c[0] == case)
    rs = Resampler(prepare(labels, logits=logits), 15, (key,))
    W = _rows(len(labels), seed=5)
    fast = rs.stats(W)[key]
    slow = _numpy(rs, key, W.copy(), monkeypatch)
    want = rs.explicit(key, W)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(fast, want, rtol=0, atol=1e-9, err_msg=key)


@needs_kernel
def test_kernel_on_unsorted_samples_reorders_the_counts():
    """A SampleStats whose samples are not in the adaptive order (a caller other than the bootstrap)."""
    logits, labels = synth(300, 4, seed=4)
    rs = Resampler(prepare(labels, logits=np.round(logits, 1)), 15, KEYS)
    st = rs.sample_stats
    W = _rows(300, seed=6)
    want = rs.stats(W)
    perm = np.random.default_rng(0).permutation(300)
    st.samples = {k: v[perm] for k, v in st.samples.items()}
    st.cache = {}  # forget the sorted flag and every per-order structure
    got = rs.stats(W[:, perm])
    for key in KEYS:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12, err_msg=key)


@needs_kernel
def test_counts_kernel_equals_bincount():
    idx = bootstrap_indices(1000, 7, 2)
    order_of = np.random.default_rng(1).permutation(1000)
    np.testing.assert_array_equal(sorted_rows.counts(idx, order_of), counts_from_indices(order_of[idx], 1000))
    bad = idx.copy()
    bad[3, 5] = 1000
    assert sorted_rows.counts(bad, order_of) is None


def test_run_slopes_mark_mixed_runs():
    c = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    ends = sorted_rows.run_ends(np.array([0.1, 0.1, 0.2, 0.3, 0.3, 0.4]))
    assert ends.tolist() == [0, 1, 1, 0, 1, 1]
    assert sorted_rows.run_slopes(c, ends).tolist() == [-1.0, -1.0, 1.0, 0.0, 0.0, 1.0]


POINT_KEYS = ("aece", "ks", "aurc", "e-aurc", "augrc", "risk@cov80", "risk@cov90", "risk@cov95")


@needs_kernel
@pytest.mark.parametrize("case", ["distinct", "ties", "coarse"])
@pytest.mark.parametrize("n", [1, 7, 600])
def test_key_walk_point_estimates_equal_the_numpy_paths(case, n, monkeypatch):
    from calbench.metrics import compute_metrics

    _, logits, labels = next(c for c in _cases() if c[0] == case)
    logits, labels = logits[:n], labels[:n]
    fast = compute_metrics(labels, logits=logits, keys=POINT_KEYS)
    with monkeypatch.context() as m:
        m.setattr(sorted_rows, "_kernel", lambda: None)
        slow = compute_metrics(labels, logits=logits, keys=POINT_KEYS)
    for key in POINT_KEYS:
        assert fast[key] == pytest.approx(slow[key], abs=1e-12), key


def _edge_probs():
    """Probabilities on the bin edges b / 15 (and 0, 1) as well as between them."""
    rng = np.random.default_rng(11)
    probs = rng.dirichlet(np.full(4, 0.4), 500)
    probs[:60] = np.array([1 / 15, 2 / 15, 4 / 15, 8 / 15])
    probs[60:80] = np.array([1.0, 0.0, 0.0, 0.0])
    probs[80:100] = np.array([0.2, 0.2, 0.6, 0.0])
    return probs, rng.integers(0, 4, 500)


@pytest.mark.skipif(__import__("calbench.metrics.stats", fromlist=["_"])._pass_kernel() is None,
                    reason="C kernel not built here")
@pytest.mark.parametrize("case", ["edges", "logits3", "logits20"])
def test_classwise_block_kernel_equals_the_numpy_pass(case, monkeypatch):
    from calbench.metrics import compute_metrics, stats

    if case == "edges":
        args = dict(zip(("probs", "labels"), _edge_probs()))
    else:
        logits, labels = synth(700, int(case[6:]), seed=12)
        args = {"logits": logits, "labels": labels}
    keys = ("cece", "sce", "brier")
    fast = compute_metrics(keys=keys, bins=15, **args)
    rs_fast = Resampler(prepare(**args), 15, keys)
    with monkeypatch.context() as m:
        m.setattr(stats, "_pass_kernel", lambda: None)
        slow = compute_metrics(keys=keys, bins=15, **args)
        rs_slow = Resampler(prepare(**args), 15, keys)
    for key in keys:
        assert fast[key] == pytest.approx(slow[key], abs=1e-12), key
    np.testing.assert_allclose(rs_fast.sample_stats.samples["brier"], rs_slow.sample_stats.samples["brier"],
                               rtol=0, atol=1e-13)
    np.testing.assert_array_equal(rs_fast.sample_stats.samples["probs"], rs_slow.sample_stats.samples["probs"])


@needs_kernel
@pytest.mark.parametrize("k", [3, 12])
def test_classwise_rows_equal_the_sparse_products(k):
    from calbench.metrics.calibration import _cece_parts, _cece_sparse

    logits, labels = synth(400, k, seed=13)
    rs = Resampler(prepare(labels, logits=logits), 15, ("cece",))
    P, lab, entries = _cece_parts(rs.sample_stats)
    assert entries[0].size > 0
    W = _rows(400, seed=7)
    got = sorted_rows.classwise_rows(W, lab, k, k * 15, entries)
    want = _cece_sparse(lab, k, 15, entries, np.ascontiguousarray(W.T))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@needs_kernel
def test_permute_rows_in_place_equals_fancy_indexing():
    rng = np.random.default_rng(14)
    a = rng.random((1000, 7))
    # 2-cycles, fixed points and the random cycles of a permutation
    order = np.concatenate([np.arange(10)[::-1], np.arange(10, 15), 15 + rng.permutation(985)])
    want = a[order]
    got = sorted_rows.permute_rows(a, order)
    assert got is a
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="not a permutation"):
        sorted_rows.permute_rows(rng.random((5, 2)), np.array([0, 1, 1, 3, 4]))
    view = rng.random((6, 4))[:, :2]  # not C-contiguous: a copy, the input untouched
    before = view.copy()
    np.testing.assert_array_equal(sorted_rows.permute_rows(view, np.arange(6)[::-1]), before[::-1])
    np.testing.assert_array_equal(view, before)
