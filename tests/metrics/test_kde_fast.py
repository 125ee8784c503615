"""kde-ece's fast parts (calbench/metrics/kde.py) against the plain forms they replace: kernel spectra
from power sums against the transform of the sampled kernel, one-pass moments against two-pass
spreads, the window histograms against a dense bincount, the division-free integrand against the
density form, and whole bootstrap calls against the full-grid reference row."""

import numpy as np
import pytest
import scipy.fft

from calbench.metrics import kde

from .conftest import softmax, synth
from .test_kernel_smoothed import _kde_reference_row


def _sampled_kernel_spectra(bw, size):
    """The triweight kernel of each row sampled at the grid step (KDEpy's support 3 bw), centred at
    index 0 of a circular array of length size, and its real FFT."""
    support = 3.0 * bw
    L = int(np.floor(support.max() / kde.KDE_STEP))
    u = np.arange(L + 1) * kde.KDE_STEP
    values = 35.0 / 32.0 * np.clip(1.0 - (u[None, :] / support[:, None]) ** 2, 0.0, None) ** 3 / support[:, None]
    arrays = np.zeros((bw.size, size))
    arrays[:, :L + 1] = values
    if L:
        arrays[:, size - L:] = values[:, :0:-1]
    spectra = scipy.fft.rfft(arrays, axis=-1)
    assert np.abs(spectra.imag).max() <= 1e-12 * np.abs(spectra.real).max()
    return spectra.real


BANDWIDTHS = {
    "one row": [0.031],
    "narrower than a step": [1e-5, 3e-5, 0.002],
    "a block of near bandwidths": list(np.linspace(0.0300, 0.0312, 16)),
    "wide range": [0.004, 0.0041, 0.02, 0.0203, 0.05],
    "sixteen rows of one L": list(np.linspace(0.03, 0.030001, 16)),  # a product in column blocks
}


@pytest.mark.parametrize("increments", [0, 4, 10 ** 6])
@pytest.mark.parametrize("name", list(BANDWIDTHS))
def test_kernel_spectra_equal_the_transform_of_the_sampled_kernel(name, increments, monkeypatch):
    """Each way to reach a row's power sums: anew at every L (0), the default, increments only."""
    monkeypatch.setattr(kde, "INCREMENTS_AT_MOST", increments)
    bw = np.array(BANDWIDTHS[name])
    size = scipy.fft.next_fast_len(kde.KDE_SEL.size + 2 * kde._half_width(bw) + 7, real=True)
    want = _sampled_kernel_spectra(bw, size)
    state = [0, 0, None]
    got = kde._kernel_spectra(bw[::-1].copy(), size, state)[::-1]  # rows in any order
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())
    again = kde._kernel_spectra(bw, size, state)  # from the power sums the last call left
    np.testing.assert_allclose(again, want, rtol=0, atol=1e-13 * np.abs(want).max())


def test_power_sums_carried_across_blocks_equal_fresh_ones():
    """The state passed from block to block (increasing L, a length change, a lower L) gives the
    same spectra as a fresh state."""
    state = [0, 0, None]
    for bw, size in [(0.020, 7500), (0.0201, 7500), (0.0203, 7500), (0.0203, 7680), (0.010, 7680)]:
        rows = np.array([bw, bw * 1.001])
        carried = kde._kernel_spectra(rows, size, state)
        fresh = kde._kernel_spectra(rows, size, [0, 0, None])
        np.testing.assert_allclose(carried, fresh, rtol=0, atol=1e-13 * np.abs(fresh).max())


def _two_pass_moments(W, r, c):
    """N, n_c, the bandwidth and the spread of all r, as np.std computes spreads (two passes)."""
    def spread(weights, total):
        m = weights @ r / np.maximum(total, 1e-300)
        return np.sqrt((weights * (r[None, :] - m[:, None]) ** 2).sum(1) / np.maximum(total, 1e-300))
    n, n_c = W.sum(1), W @ c
    s_cor, s_all = spread(W * c, n_c), spread(W, n)
    s = np.where((n_c >= 2) & (s_cor > kde.ZERO_SPREAD), s_cor, s_all)
    return n, n_c, s * (2.0 * n) ** -0.2, s_all


def test_one_pass_moments_equal_two_pass_spreads():
    rng = np.random.default_rng(5)
    n = 200
    r = np.concatenate([rng.uniform(0.0, 0.3, 150), rng.uniform(0.3, 1.0, n - 170), np.full(20, 0.999)])
    c = (rng.random(n) < r).astype(float)
    c[-20:] = 1.0  # the correct samples of the last rows share one value
    W = rng.multinomial(n, np.full(n, 1 / n), size=20).astype(float)
    W[12:] = 0.0
    W[12:, -20:] = rng.integers(1, 7, (8, 20))  # one confidence value far from the mean of r: the
    # one-pass spread comes out ~1e-8 > ZERO_SPREAD for some, the two-pass recheck finds the point mass
    W[0] = W[12]
    W[1] = np.where(c > 0, 0.0, 1.0)  # no correct sample
    W[2] = 0.0
    W[2, [0, -1]] = [3.0, 2.0]  # one correct sample
    W[3] = 0.0
    W[3, -20:] = 1.0
    W[3, 150:155] = np.where(c[150:155] > 0, 0.0, 1.0)  # the correct ones all at 0.999: bandwidth from all r
    got, want = kde._moments(W, r, c), _two_pass_moments(W, r, c)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    point = want[3] <= kde.ZERO_SPREAD  # the single-value fallback: the same rows
    np.testing.assert_array_equal(got[3] <= kde.ZERO_SPREAD, point)
    np.testing.assert_array_equal(np.flatnonzero(point), [0, *range(12, 20)])
    for g, w in zip(got[2:], want[2:]):  # the bandwidth (row 3: from all r) and the spread
        np.testing.assert_allclose(g[~point], w[~point], rtol=1e-13, atol=0)


def test_window_histograms_equal_a_dense_bincount():
    rng = np.random.default_rng(2)
    r = np.concatenate([rng.uniform(0.0, 1.0, 150), [0.01, 0.5, 0.999, 1.0]])
    c = (rng.random(r.size) < 0.7).astype(float)
    W = rng.multinomial(r.size, np.full(r.size, 1 / r.size), size=5).astype(float)
    entries = kde.kde_entries(r)
    cells, share, sample = entries[:3]
    base, top = kde.KDE_SEL[0] - 300, kde.KDE_LAST + 250
    window_cells, counts = kde._window_counts(entries, c, W, base, top)
    for block_base, width in [(base, top - base), (base + 400, 5000), (kde.KDE_LAST - 50, 200)]:
        size = width + 13
        got = kde._histograms(window_cells, counts, block_base, width, np.full((2, W.shape[0], size), np.nan))
        keep = (cells >= block_base) & (cells < block_base + width)
        for i, w in enumerate(W):
            for k, weights in enumerate([w, w * c]):
                want = np.bincount(cells[keep] - block_base, (weights[sample] * share)[keep], size)
                np.testing.assert_allclose(got[k, i], want, rtol=0, atol=1e-13)


def _density_form(s_all, s_cor, n, n_c, g_a):
    """The estimate as the module docstring states it: densities p2 = s_all / N, p1 = s_cor / n_c,
    acc(x) = min(acc p1 / p2, 1) (1 where p2 <= 0), the integrand carried over invalid points."""
    x = kde.KDE_GRID[g_a:kde.KDE_LAST + 1]
    out = []
    for a, b, N, nc in zip(s_all, s_cor, n, n_c):
        p2, p1 = a / N, b / max(nc, 1e-300)
        integrand, last = np.zeros(x.size), 0.0
        for t in range(x.size):
            if max(p1[t], p2[t]) > kde.KDE_FLOOR:
                acc = min(nc / N * p1[t] / p2[t], 1.0) if p2[t] > 0 else 1.0
                last = abs(x[t] - acc) * p2[t]
            integrand[t] = last
        out.append(np.trapezoid(integrand, x) / np.trapezoid(p2, x))
    return np.array(out)


def test_division_free_integrand_equals_the_density_form():
    """Smoothed counts with a zero leading run, gaps (carried values), points valid by the correct
    samples alone, rounding noise around 0 and one nonpositive valid point."""
    rng = np.random.default_rng(4)
    g_a = kde.KDE_LAST - 599
    M = kde.KDE_LAST - g_a + 1
    x = np.linspace(0, 1, M)
    bump = np.exp(-((x[None, :] - rng.uniform(0.3, 0.8, (6, 1))) / 0.15) ** 2)
    n, n_c = np.full(6, 300.0), np.array([250.0, 300.0, 0.0, 120.0, 1.0, 200.0])
    s_all = 40 * bump + rng.normal(0, 1e-17, (6, M))
    s_cor = s_all * rng.uniform(0.5, 1.0, (6, M)) * (n_c > 0)[:, None]
    s_all[:, :50] = 0.0
    s_cor[:, :50] = 0.0
    s_all[0, 200:260] = s_cor[0, 200:260] = 0.0  # a gap: carried values
    s_cor[3, 300:320] = 1e-3  # p1 = 8e-6
    s_all[3, 300:320] = 5e-5  # p2 = 2e-7: valid by p1 alone
    s_all[3, 310] = -1e-3  # ... and a nonpositive count there (large enough for the sign to show)
    want = _density_form(s_all, s_cor, n, n_c, g_a)
    got = kde.kde_ece_from(s_all.copy(), s_cor.copy(), n, n_c, g_a)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_quickstart_sized_bootstrap_equals_the_full_grid_reference():
    """A few hundred confident samples (the digits test sets' size), resample rows whose
    bandwidths spread over several blocks and power-sum restarts."""
    logits, labels = synth(350, 10, 4, scale=6.0)
    p = softmax(logits)
    r, c = p.max(1), (p.argmax(1) == labels).astype(float)
    rng = np.random.default_rng(1)
    W = rng.multinomial(r.size, np.full(r.size, 1 / r.size), size=3 * kde.ROWS_AT_ONCE + 5).astype(float)
    got = kde.kde_ece_weighted(r, c, W)
    want = np.array([_kde_reference_row(r, c, w) for w in W])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_rows_in_several_passes_equal_one_pass(monkeypatch):
    """Many samples x many rows go in passes of bounded temporaries; each row's value is its own."""
    logits, labels = synth(300, 10, 6)
    p = softmax(logits)
    r, c = p.max(1), (p.argmax(1) == labels).astype(float)
    W = np.random.default_rng(2).multinomial(r.size, np.full(r.size, 1 / r.size), size=40).astype(float)
    whole = kde.kde_ece_weighted(r, c, W)
    monkeypatch.setattr(kde, "PASS_ELEMENTS", 10 * r.size * 17)  # passes of 17 rows (> one block)
    parts = kde.kde_ece_weighted(r, c, W)
    np.testing.assert_allclose(parts, whole, rtol=1e-13, atol=0)
    calls = []
    original = kde._moments
    monkeypatch.setattr(kde, "_moments", lambda W_, r_, c_: calls.append(W_.shape[0]) or original(W_, r_, c_))
    kde.kde_ece_weighted(r, c, W)
    assert calls == [17, 17, 6]
