"""The fast paths of kde-ece (kde.py) and smece / sece (smooth.py) against plain float64 references
written out here: the same estimators on the whole grid, one weight row at a time, with no cut of
the FFT, no bound, no cache. Inputs are chosen to reach every branch: sparse data with gaps (the
carried integrand), wide and narrow bandwidths, confidences near 0 (mirror images inside [0, 1]),
rows without a correct sample, zero counts, rows spanning several blocks.
"""

import numpy as np
import pytest
import scipy.fft

from calbench.metrics import kde

from .conftest import softmax, synth

# --- kde-ece: the authors' estimate on the full 2^14 grid (module docstring of kde.py) ---


def _kde_reference_row(r, c, w):
    """KDE-ECE of one count row: dense linear binning of every point and mirror image on the whole
    grid, a linear FFT convolution of the whole grid, the authors' loop for the integrand."""
    grid = np.linspace(-0.6, 1.6, 2 ** 14)
    step = grid[1] - grid[0]
    n, n_c = w.sum(), w @ c
    def spread(v, tot):
        return np.sqrt(v @ (r - v @ r / tot) ** 2 / tot)
    s_all = spread(w, n)
    if s_all <= 1e-9:
        return abs(w @ r / n - n_c / n)
    s = spread(w * c, n_c) if n_c >= 2 else 0.0
    bw = (s if s > 1e-9 else s_all) * (2 * n) ** -0.2
    pts = np.concatenate([r, np.where(r < 0.5, -r, 2 - r)])
    pos = (pts - grid[0]) / step
    j = np.floor(pos).astype(int).clip(0, grid.size - 2)
    f = pos - j

    def hist(v):
        v2 = np.concatenate([v, v])
        return np.bincount(j, (1 - f) * v2, grid.size) + np.bincount(j + 1, f * v2, grid.size)

    L = int(np.floor(3 * bw / step))
    u = np.arange(-L, L + 1) * step
    ker = 35 / 32 * np.clip(1 - (u / (3 * bw)) ** 2, 0, None) ** 3 / (3 * bw)
    size = scipy.fft.next_fast_len(grid.size + 2 * L + 1)

    def smooth(h):
        return scipy.fft.irfft(scipy.fft.rfft(h, size) * scipy.fft.rfft(ker, size), size)[L:L + grid.size]

    inside = (grid > 0) & (grid < 1)
    p2 = np.where(inside, smooth(hist(w)) / n, 0.0)
    p1 = np.where(inside, smooth(hist(w * c)) / max(n_c, 1e-300), 0.0)
    sel = np.flatnonzero((grid >= 0) & (grid <= 1))
    integrand, last = np.zeros(sel.size), 0.0
    for t, g in enumerate(sel):
        if max(p1[g], p2[g]) > 1e-6:
            acc = min(n_c / n * p1[g] / p2[g], 1.0) if p2[g] > 0 else 1.0
            last = abs(grid[g] - acc) * p2[g]
        integrand[t] = last
    return np.trapezoid(integrand, grid[sel]) / np.trapezoid(p2[sel], grid[sel])


def _kde_cases():
    rng = np.random.default_rng(3)
    logits, labels = synth(300, 10, 1)
    p = softmax(logits)
    yield "synth", p.max(1), (p.argmax(1) == labels).astype(float)
    r = np.concatenate([rng.uniform(0.2, 0.25, 20), rng.uniform(0.7, 0.72, 20), rng.uniform(0.97, 1.0, 40)])
    yield "gaps", r, (rng.random(r.size) < r).astype(float)  # density 0 between the clusters
    r = rng.uniform(0.01, 0.06, 60)  # many classes: confidences near 0, mirrors at -r inside the reach
    yield "near zero", r, (rng.random(60) < 0.5).astype(float)
    # the correct ones spread 2e-4: kernels narrower than a grid step (L = 0) beside wide ones
    # (a far narrower kernel peaks so high that the FFT's rounding reaches the 1e-6 density floor)
    r = np.concatenate([np.full(30, 0.9), np.full(2, 0.9002), rng.uniform(0.5, 1, 10)])
    yield "narrow", r, np.concatenate([np.ones(32), np.zeros(10)])


@pytest.mark.parametrize("name, r, c", list(_kde_cases()), ids=[x[0] for x in _kde_cases()])
def test_kde_weighted_rows_equal_the_full_grid_reference(name, r, c):
    rng = np.random.default_rng(7)
    n = r.size
    W = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(2 * kde.ROWS_AT_ONCE + 3)])
    W = W.astype(float)
    W[0] = 1.0
    W[1] = np.where(c > 0, 0.0, 1.0)  # no correct sample
    W[2] = 0.0
    W[2, :3] = [2.0, 1.0, 1.0]  # three samples
    fast = kde.kde_ece_weighted(r, c, W)
    ref = np.array([_kde_reference_row(r, c, w) for w in W])
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
    alone = np.array([kde.kde_ece_weighted(r, c, w[None])[0] for w in W[:5]])
    # blocks share a kernel reach; a row's kernel spectrum is summed from its block's smallest L
    np.testing.assert_allclose(alone, fast[:5], rtol=1e-13, atol=1e-14)


def test_carry_forward_equals_the_running_maximum_form():
    rng = np.random.default_rng(0)
    values = rng.random((6, 50))
    valid = rng.random((6, 50)) < 0.6
    valid[0] = False
    valid[1] = True
    valid[2, :10] = False
    last = np.maximum.accumulate(np.where(valid, np.arange(50), -1), axis=1)
    want = np.where(last >= 0, np.take_along_axis(values, np.maximum(last, 0), axis=1), 0.0)
    kde._carry_forward(values, valid)
    np.testing.assert_array_equal(values, want)


# --- smece: relplot's smooth_ece and bandwidth search, one explicit resample at a time ---


def _smooth_ece_reference(r, c, sigma):
    """relplot.metrics.smooth_ece(r, c, sigma) written out: linear split onto the grid, the reflected
    Gaussian smoothing of smooth.py's reference form, interpolation onto the mesh."""
    from calbench.metrics import smooth

    G = max(2000, round(20 / sigma)) // 2 + 1
    T = max(round(10 / sigma), smooth.SMECE_MESH)

    def hist(v):
        pos = r * (G - 1)
        j = pos.astype(int).clip(0, G - 2)
        return np.bincount(j, (1 - (pos - j)) * v, G) + np.bincount(j + 1, (pos - j) * v, G)

    t = np.linspace(0, 1, T)
    inds = (t * (G - 1)).astype(int).clip(0, G - 2)
    res = (t - inds / (G - 1)) * (G - 1)

    def on_mesh(v):
        y = smooth._reflected_smooth(hist(v)[None], sigma)[0]
        return y[inds] * (1 - res) + y[inds + 1] * res

    dens = on_mesh(np.ones_like(r)) + smooth.SMECE_DENS_EPS
    return np.abs(on_mesh(r - c)).sum() / dens.sum()


def _smece_reference(r, c):
    def exceeds(sigma):
        return sigma < 1e-3 or sigma < _smooth_ece_reference(r, c, sigma)
    if exceeds(1.0):
        return _smooth_ece_reference(r, c, 1.0)
    start, end = 1.0, 0.0
    for _ in range(10):
        mid = (start + end) / 2
        start, end = (start, mid) if exceeds(mid) else (mid, end)
    return _smooth_ece_reference(r, c, start)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_smece_bootstrap_rows_equal_relplots_search_on_each_resample(scale):
    from calbench.metrics.bootstrap import bootstrap_indices, bootstrap_metrics

    logits, labels = synth(400, 10, 5, scale)
    p = softmax(logits)
    r, c = p.max(1), (p.argmax(1) == labels).astype(float)
    res = bootstrap_metrics(labels, probs=p, B=4, seed=2, keys=("smece",))
    idx = bootstrap_indices(400, 4, 2)
    want = [_smece_reference(r[i], c[i]) for i in idx]
    np.testing.assert_allclose(res["samples"]["smece"], want, rtol=0, atol=1e-9)
    assert abs(res["point"]["smece"] - _smece_reference(r, c)) < 1e-9


def test_smece_shared_products_equal_the_dense_products():
    """The bounds' masses from W @ (A^T U) equal the products of the (b, G) histograms."""
    from calbench.metrics import smooth
    from calbench.metrics.bootstrap import Resampler, bootstrap_indices, counts_from_indices
    from calbench.metrics.inputs import prepare

    logits, labels = synth(300, 10, 2)
    rs = Resampler(prepare(labels, logits=logits), 15, ("smece",))
    W = counts_from_indices(rs.inv[bootstrap_indices(300, 6, 0)], 300)
    ev = smooth._SmoothECE(rs.sample_stats, W)
    U = np.stack([smooth._bandwidth(s).u for s in (0.5, 0.0625, 0.015625)], axis=1)
    h_res, h_one = ev.hists(smooth.SMECE_SHARED_GRID)
    want = np.stack([h_one @ U, h_res @ U, np.abs(h_res) @ U], axis=1)
    np.testing.assert_allclose(ev._shared_products(U), want, rtol=1e-12, atol=0)


# --- sece / smece point estimates: the one-pass histograms against the weighted (sparse) path ---


def _stats_with_samples(n, seed):
    from calbench.metrics.bootstrap import Resampler
    from calbench.metrics.inputs import prepare
    from calbench.metrics.stats import pack

    logits, labels = synth(n, 10, seed)
    rs = Resampler(prepare(labels, logits=logits), 15, ("sece", "smece"))
    st = rs.sample_stats  # samples sorted, key dropped: give the point path a key again, shuffled
    order = np.random.default_rng(seed).permutation(n)
    st.key = pack(st.sample("conf")[order], st.sample("correct")[order].astype(bool))
    return st


@pytest.mark.parametrize("points", [1001, 2001])
def test_point_histograms_equal_the_sparse_split(points):
    from calbench.metrics import smooth

    st = _stats_with_samples(3000, 4)
    hists = smooth.point_hists(st, points, resid=True)
    for what in ("one", "correct", "resid"):
        want = smooth.grid_hist(st, np.ones((1, st.n)), points, what)[0]
        np.testing.assert_allclose(hists[what], want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_sece_and_smece_point_estimates_equal_their_weighted_paths_on_a_row_of_ones():
    from calbench.metrics import smooth

    st = _stats_with_samples(3000, 6)  # n > SECE_DENSE_MAX: the FFT path with _sece_gaps
    ones = np.ones((1, st.n))
    assert abs(smooth.sece(st, None) - smooth.sece(st, ones)[0]) < 1e-13
    assert abs(smooth.smece(st, None) - smooth.smece(st, ones)[0]) < 1e-13


def test_sece_bootstrap_gaps_in_sample_blocks_equal_one_block(monkeypatch):
    """The FFT path (n above SECE_DENSE_MAX) sums the per-sample gaps block by block; any block size
    gives the one-block value to rounding."""
    from calbench.metrics import bootstrap_metrics, smooth

    logits, labels = synth(smooth.SECE_DENSE_MAX + 101, 10, 4)
    monkeypatch.setattr(smooth, "SECE_GAP_ROWS", 10 ** 9)
    whole = bootstrap_metrics(labels, logits=logits, B=40, keys=("sece",))
    monkeypatch.setattr(smooth, "SECE_GAP_ROWS", 7)
    blocks = bootstrap_metrics(labels, logits=logits, B=40, keys=("sece",))
    np.testing.assert_allclose(blocks["samples"]["sece"], whole["samples"]["sece"], rtol=1e-13, atol=0)
    assert np.ptp(whole["samples"]["sece"]) > 0
