"""tace's C kernel (calbench/metrics/classwise_boot.c) against its NumPy path and against the metric
recomputed on explicit resamples: ties, classes with no entry above the threshold, rows drawn zero
times, one row and rows spanning several lane groups; counts it declines and CALBENCH_NATIVE=0
fall back to NumPy. (The registry-wide tests check every metric's weights path too.)"""

import os
import subprocess
import sys

import numpy as np
import pytest

from calbench import native
from calbench.metrics import bootstrap_metrics
from calbench.metrics import classwise as cw
from calbench.metrics.bootstrap import Resampler, bootstrap_indices, counts_from_indices
from calbench.metrics.inputs import prepare
from .conftest import softmax, synth


def kernel_or_fail():
    """The kernel must build wherever a compiler exists (else every comparison here is empty)."""
    if not native.enabled() or native._compiler() is None:
        pytest.skip("no C compiler / CALBENCH_NATIVE=0: only the NumPy path exists")
    lib = cw._kernel()
    assert lib is not None, "classwise_boot.c did not build"
    return lib


def tied_probs(n: int, k: int, seed: int, levels: int | None = 4, dead_class: bool = True):
    """Probabilities with many exact ties (logits on a coarse grid), one class below the threshold
    everywhere (dead_class), labels from the probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3.0
    if levels is not None:
        logits = np.round(logits * levels / 3.0) * 3.0 / levels
    if dead_class:
        logits[:, k - 1] = -30.0                 # p < 1e-3 for every sample: the class adds 0
    probs = softmax(logits)
    labels = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)
    return probs, labels


def count_rows(n: int, b: int, seed: int, zero_row: bool = True, big: bool = False):
    """Bootstrap-like count rows, one of them all zero, optionally counts up to 255."""
    rng = np.random.default_rng(seed)
    W = counts_from_indices(rng.integers(0, n, (b, n)), n)
    if zero_row:
        W[b // 2] = 0.0
    if big:
        W[0, : min(n, 3)] = 255.0
    return W


@pytest.mark.parametrize("n,k,bins,b,levels", [
    (1, 2, 15, 1, None), (2, 3, 15, 3, 4), (7, 3, 2, 17, 2), (50, 4, 1, 16, 4), (300, 7, 15, 37, 4),
    (300, 7, 40, 5, None), (1000, 3, 15, 50, 8), (513, 5, 7, 33, 1)])
def test_kernel_equals_the_numpy_path(n, k, bins, b, levels):
    kernel_or_fail()
    probs, labels = tied_probs(n, k, seed=n + k + b, levels=levels)
    orders = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    assert (orders.start[k - 1] == n) and np.all(orders.start[: k - 1] < n)
    for W in (count_rows(n, b, seed=b), count_rows(n, b, seed=b + 1, big=True), np.ones((b, n))):
        fast, slow = cw.kernel_tace(orders, W, bins), cw.numpy_tace(orders, W, bins)
        assert fast is not None and fast.shape == (b,)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)
        if not W[b // 2].any():
            assert fast[b // 2] == 0.0                  # a row drawing nothing: every class adds 0
    np.testing.assert_allclose(cw.kernel_tace(orders, np.ones((1, n)), bins),
                               cw.numpy_tace(orders, None, bins), rtol=1e-12, atol=1e-15)


def test_kernel_equals_the_explicit_resamples():
    """Rows in several lane groups (16 per group) recomputed one by one on their resampled sets."""
    kernel_or_fail()
    probs, labels = tied_probs(400, 6, seed=5, levels=3)
    rs = Resampler(prepare(labels, probs=probs), 15, ("tace",))
    W = counts_from_indices(rs.inv[bootstrap_indices(400, 35, seed=2)], 400)
    fast = rs.stats(W)["tace"]
    orders = rs.sample_stats.cache["tace"]
    np.testing.assert_allclose(fast, cw.kernel_tace(orders, W, 15), rtol=0, atol=0)
    np.testing.assert_allclose(fast, rs.explicit("tace", W), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("built_by", ["kernel", "numpy"])
def test_the_sort_orders_by_probability_then_target(built_by, monkeypatch):
    if built_by == "kernel":
        kernel_or_fail()
    else:
        monkeypatch.setattr(cw, "_kernel", lambda: None)
    probs, labels = tied_probs(200, 4, seed=1, levels=1)
    orders = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    sorted_only = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD, indices=False)
    assert sorted_only.order is None
    np.testing.assert_array_equal(sorted_only.gap, orders.gap)
    np.testing.assert_array_equal(sorted_only.start, orders.start)
    for k in range(4):
        p, t = probs[orders.order[k], k], (labels[orders.order[k]] == k).astype(float)
        assert np.all(np.diff(p) >= 0) and np.all(np.diff(t)[np.diff(p) == 0] >= 0)
        np.testing.assert_array_equal(np.sort(orders.order[k]), np.arange(200))
        np.testing.assert_array_equal(orders.gap[k], t - p)
        assert orders.start[k] == np.count_nonzero(probs[:, k] <= cw.TACE_THRESHOLD)


def test_the_kernel_and_numpy_build_the_same_orders(monkeypatch):
    kernel_or_fail()
    probs, labels = tied_probs(500, 6, seed=9, levels=2)
    fast = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    monkeypatch.setattr(cw, "_kernel", lambda: None)
    slow = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    for name in ("order", "gap", "start"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


def cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_the_builds_for_other_machines_agree(isa, tmp_path, monkeypatch):
    """The AVX2 and the portable (no -march) builds of the walk against the NumPy path (this
    machine's own build is the one every other test uses)."""
    kernel_or_fail()
    if isa == "avx2" and not cpu_has("avx2"):
        pytest.skip("this CPU has no AVX2")
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "NATIVE", ["-mavx2"] if isa == "avx2" else ["-mno-such-option-calbench"])
    monkeypatch.setattr(native, "_native_target", lambda compiler: isa if isa == "avx2" else None)
    lib = cw.typed(native.load.__wrapped__("classwise_boot", package="metrics"))
    assert lib is not None
    monkeypatch.setattr(cw, "_kernel", lambda: lib)
    probs, labels = tied_probs(700, 5, seed=11, levels=3)
    orders = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    W = count_rows(700, 37, seed=12, big=True)
    np.testing.assert_allclose(cw.kernel_tace(orders, W, 15), cw.numpy_tace(orders, W, 15), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [0.5, 256.0, -1.0])
def test_counts_the_kernel_declines_go_to_numpy(bad):
    kernel_or_fail()
    probs, labels = tied_probs(60, 3, seed=3)
    orders = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    W = count_rows(60, 20, seed=4)
    W[19, 7] = bad
    assert cw.kernel_tace(orders, W, 15) is None
    np.testing.assert_array_equal(cw.tace_of(orders, W, 15), cw.numpy_tace(orders, W, 15))


def test_without_the_kernel_tace_takes_the_numpy_path(monkeypatch):
    kernel_or_fail()
    probs, labels = tied_probs(300, 5, seed=6)
    orders = cw.ClassOrders(probs, labels, cw.TACE_THRESHOLD)
    W = count_rows(300, 20, seed=7)
    fast = cw.tace_of(orders, W, 15)
    monkeypatch.setattr(cw, "_kernel", lambda: None)
    slow = cw.tace_of(orders, W, 15)
    np.testing.assert_array_equal(slow, cw.numpy_tace(orders, W, 15))
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)
    monkeypatch.setenv("CALBENCH_NATIVE", "0")
    assert native.load.__wrapped__("classwise_boot", package="metrics") is None


def test_calbench_native_0_gives_the_same_bootstrap():
    """A whole bootstrap in a process with CALBENCH_NATIVE=0 (NumPy) against this one (kernel)."""
    kernel_or_fail()
    logits, labels = synth(500, 6, seed=8)
    here = bootstrap_metrics(labels, logits=logits, B=40, seed=1, keys=("tace",))["samples"]["tace"]
    code = ("import sys, numpy as np; from calbench.metrics import bootstrap_metrics, classwise;"
            "from tests.metrics.conftest import synth; logits, labels = synth(500, 6, seed=8);"
            "assert classwise._kernel() is None;"
            "r = bootstrap_metrics(labels, logits=logits, B=40, seed=1, keys=('tace',));"
            "sys.stdout.write(' '.join(repr(float(v)) for v in r['samples']['tace']))")
    env = {**os.environ, "CALBENCH_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    there = np.array([float(v) for v in out.stdout.split()])
    np.testing.assert_allclose(here, there, rtol=1e-12, atol=1e-15)
