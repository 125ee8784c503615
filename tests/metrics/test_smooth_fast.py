"""smece's exact evaluations (smooth.py: _SmoothECE.mesh_mass) by each of its three plans, the
spectral product (_spectral_basis, _spectral_mesh) and the written-out operator (mesh_matrix),
against the FFT smoothing they replace (_Bandwidth.smooth, itself tested against relplot's form),
and the bootstrap under every plan against relplot's search written out on each explicit resample.
Small sets occupy few grid cells (the product over the cells), larger ones most (the rfft branch)."""

import numpy as np
import pytest

from calbench.metrics import smooth
from calbench.metrics.bootstrap import Resampler, bootstrap_indices, bootstrap_metrics, counts_from_indices
from calbench.metrics.inputs import prepare

from .conftest import softmax, synth
from .test_kernel_smoothed import _smece_reference

SPECTRAL = (0.05, 0.03125, 0.0234375, 0.015625)   # sigma with a spectral matrix (Gaussian inside [0, 1])
OTHERS = (1.0, 0.5, 0.125, 0.0625, 0.0146484375, 0.0107421875)  # cut by the window, or too many bins


def _evaluator(n, B=12, seed=0, scale=3.0):
    logits, labels = synth(n, 10, seed, scale)
    rs = Resampler(prepare(labels, logits=logits), 15, ("smece",))
    W = counts_from_indices(rs.inv[bootstrap_indices(n, B, seed)], n)
    return smooth._SmoothECE(rs.sample_stats, W), rs, W


def _fft_mass(ev, sigma, rows):
    bw = smooth._bandwidth(sigma)
    return bw.mesh_abs_mass(bw.smooth(ev.hists(bw.points)[0][rows]))


def test_spectral_matrix_exists_exactly_where_the_kernel_spectrum_is_gaussian():
    for sigma in SPECTRAL:
        E = smooth._spectral_mesh(sigma)
        assert E is not None and E.shape == (E.shape[0], smooth._bandwidth(sigma).T)
    for sigma in OTHERS:
        assert smooth._spectral_mesh(sigma) is None


def test_dropped_kernel_bins_weigh_nothing():
    """Every bin beyond the spectral matrix's K is below 1e-15 of the kernel's spectrum at 0."""
    for sigma in SPECTRAL:
        F = np.abs(smooth._bandwidth(sigma).full_fker)
        K = smooth._spectral_mesh(sigma).shape[0] // 2
        assert F[K:].max() < 1e-15 * F[0] < F[K - 40]


@pytest.mark.parametrize("n", [100, 3000])
@pytest.mark.parametrize("how", ["spectral", "direct"])
def test_each_plan_equals_the_fft_smoothing(n, how, monkeypatch):
    ev, _, _ = _evaluator(n)
    rows = np.array([0, 3, 4, 11])
    monkeypatch.setattr(ev, "plan", lambda sigma, k: how)
    for sigma in SPECTRAL + (OTHERS if how == "direct" else ()):
        want = _fft_mass(ev, sigma, rows)
        np.testing.assert_allclose(ev.mesh_mass(sigma, rows), want, rtol=1e-13, atol=0)
        np.testing.assert_allclose(ev.mesh_mass(sigma, np.arange(ev.b))[rows], want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("sigma", (1.0, 0.125, 0.04, 0.0146484375, 0.005, 0.001))
def test_truncated_circular_smoothing_equals_relplots_reflected_convolution(sigma):
    """_Bandwidth.smooth (kernel cut at 12 sigma, circular FFT of size >= G + L - 1) against the
    reference form (reflect at both ends, the whole kernel, a linear 'valid' convolution)."""
    bw = smooth._bandwidth(sigma)
    h = np.random.default_rng(2).normal(size=(3, bw.points))
    h[:, :5] = 0
    want = smooth._reflected_smooth(h, sigma)
    np.testing.assert_allclose(bw.smooth(h), want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_mesh_matrix_gives_every_mesh_value_of_the_smoothing():
    """Signed mesh values (not only their absolute sum), on a cell set with both ends of the grid."""
    rng = np.random.default_rng(1)
    G = smooth.SMECE_SHARED_GRID
    cells = np.unique(np.concatenate([[0, 1, G - 2, G - 1], rng.choice(G, 80, replace=False)]))
    h = np.zeros((3, G))
    h[:, cells] = rng.normal(size=(3, cells.size))
    for sigma in SPECTRAL + OTHERS:
        bw = smooth._bandwidth(sigma)
        y = bw.smooth(h)
        want = y[:, bw.inds] * (1 - bw.res) + y[:, bw.inds + 1] * bw.res
        np.testing.assert_allclose(h[:, cells] @ bw.mesh_matrix(cells), want, rtol=0, atol=1e-13 * np.abs(want).max())


def test_spectra_from_the_cells_equal_the_rfft(monkeypatch):
    ev, _, _ = _evaluator(100)
    assert ev.occupied()[0].size <= smooth.SMECE_BASIS_CELLS
    by_cells = ev.spectra(2 * smooth.SMECE_SPECTRAL_BINS).copy()
    ev.X = None
    monkeypatch.setattr(smooth, "SMECE_BASIS_CELLS", 0)
    by_fft = ev.spectra(2)
    np.testing.assert_allclose(by_cells, by_fft, rtol=0, atol=1e-12 * np.abs(by_fft).max())


def test_spectra_columns_added_in_pieces_equal_all_at_once():
    ev, _, _ = _evaluator(100)
    for width in (10, 40, 200, 2 * smooth.SMECE_SPECTRAL_BINS):
        ev.spectra(width)
    pieces = ev.X.copy()
    ev.X = None
    np.testing.assert_array_equal(ev.spectra(2 * smooth.SMECE_SPECTRAL_BINS), pieces)


def test_occupied_cells_hold_every_nonzero_of_the_histograms():
    ev, _, _ = _evaluator(100)
    cells, H = ev.occupied()
    h_res = ev.hists(smooth.SMECE_SHARED_GRID)[0]
    assert 0 < cells.size < smooth.SMECE_SHARED_GRID
    np.testing.assert_allclose(H, h_res[:, cells], rtol=1e-15, atol=1e-15)
    assert not np.delete(h_res, cells, axis=1).any()
    cells_one, H_one = ev.on_cells("one")
    h_one = ev.hists(smooth.SMECE_SHARED_GRID)[1]
    np.testing.assert_allclose(H_one, h_one[:, cells_one], rtol=1e-15, atol=1e-15)
    assert not np.delete(h_one, cells_one, axis=1).any()
    rows = np.array([2, 5])
    np.testing.assert_allclose(ev.residuals(smooth.SMECE_SHARED_GRID, rows), h_res[rows], rtol=1e-15, atol=1e-15)
    bw = smooth._bandwidth(0.0625)
    want = ev.hists(bw.points)[1][rows] @ bw.u + bw.T * smooth.SMECE_DENS_EPS
    np.testing.assert_allclose(ev.density(bw, rows), want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("forced", [None, "fft", "direct"])
@pytest.mark.parametrize("n,scale", [(100, 3.0), (600, 1.0)])
def test_smece_bootstrap_under_every_plan_equals_relplots_search(n, scale, forced, monkeypatch):
    """The planner's choice (None), or every evaluation forced to the FFT or to mesh_matrix, gives
    relplot's search on each explicit resample (and the same values under every plan)."""
    if forced is not None:
        monkeypatch.setattr(smooth._SmoothECE, "plan", lambda self, sigma, rows: forced
                            if smooth._bandwidth(sigma).points == smooth.SMECE_SHARED_GRID else "fft")
    logits, labels = synth(n, 10, 4, scale)
    p = softmax(logits)
    r, c = p.max(1), (p.argmax(1) == labels).astype(float)
    res = bootstrap_metrics(labels, probs=p, B=5, seed=3, keys=("smece",))
    want = [_smece_reference(r[i], c[i]) for i in bootstrap_indices(n, 5, 3)]
    np.testing.assert_allclose(res["samples"]["smece"], want, rtol=0, atol=1e-9)
    assert np.ptp(res["samples"]["smece"]) > 0


# --- sece: the small-set operator factored through the grid nodes the samples reach ---


def _confident(n, seed):
    """Two-class probabilities with confidences bunched near 1 (as a trained network's): fewer grid
    nodes than samples, plus a spread-out tenth."""
    rng = np.random.default_rng(seed)
    r = np.where(rng.random(n) < 0.9, 1 - rng.exponential(0.01, n), rng.uniform(0.5, 1, n)).clip(0.5, 1)
    labels = (rng.random(n) > r).astype(int)
    return labels, np.stack([r, 1 - r], axis=1)


def test_sece_factors_equal_the_dense_operators():
    labels, p = _confident(300, 0)
    r, c = p.max(1), (p.argmax(1) == labels).astype(float)
    Q_num, Q_den = smooth._sece_operators(r, c, smooth.SECE_BANDWIDTH)
    P, P_c, PT, S = smooth._sece_factors(r, c, smooth.SECE_BANDWIDTH)
    assert S.shape[0] < r.size and len(smooth._sece_linear(r, c, smooth.SECE_BANDWIDTH)) == 4
    np.testing.assert_allclose(PT @ (S @ P.toarray()), Q_den, rtol=0, atol=1e-14)
    np.testing.assert_allclose(PT @ (S @ P_c.toarray()), Q_num, rtol=0, atol=1e-14)


@pytest.mark.parametrize("n,seed", [(300, 1), (500, 2)])
def test_sece_bootstrap_factored_and_dense_equal_the_fft_path(n, seed, monkeypatch):
    labels, p = _confident(n, seed)
    def run():
        return bootstrap_metrics(labels, probs=p, B=30, seed=1, keys=("sece",))["samples"]["sece"]
    chosen = run()
    monkeypatch.setattr(smooth, "_sece_linear", lambda r, c, h: smooth._sece_operators(r, c, h))
    dense = run()
    monkeypatch.setattr(smooth, "SECE_DENSE_MAX", 0)
    fft = run()
    np.testing.assert_allclose(chosen, dense, rtol=1e-12, atol=0)
    np.testing.assert_allclose(chosen, fft, rtol=1e-10, atol=0)
    assert np.ptp(chosen) > 0
