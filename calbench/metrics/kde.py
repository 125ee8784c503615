"""KDE-based top-label ECE of Zhang, Kailkhura & Han, "Mix-n-Match: Ensemble and Compositional
Methods for Uncertainty Calibration in Deep Learning" (ICML 2020), following the facts of the
authors' code (ece_kde_binary in their repository; docs/metrics.md):

- top-label: the confidence r_i and correctness c_i (their code uses p_i1 against y_i when K = 2;
  calbench uses the top label for every K);
- triweight kernel whose standard deviation is the bandwidth (KDEpy's convention: support
  3 * bw), bw = std(r_i over correct samples) * (2N)^(-1/5);
- reflection at 0 and 1 (r < 0.5 mirrored to -r, r >= 0.5 to 2 - r), densities computed on the
  grid linspace(-0.6, 1.6, 2^14) by linear binning and convolution (KDEpy's FFTKDE), set to 0
  outside (0, 1) and doubled: p1 = density of r among correct samples, p2 = density of all r;
- acc(x) = min(acc * p1(x) / p2(x), 1) where max(p1, p2) > 1e-6 (elsewhere the integrand keeps its
  previous grid value, as their loop does), and
  KDE-ECE = trapz(|x - acc(x)| p2(x)) / trapz(p2(x)) over the grid points in [0, 1].
Degenerate inputs (their code fails there): with fewer than two distinct confident values among
the correct samples the bandwidth rule uses all confidences; when every confidence is the same
value r0 the KDE is a point mass and the value is |r0 - acc|.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, weighted

KDE_GRID = np.linspace(-0.6, 1.6, 2 ** 14)
KDE_STEP = KDE_GRID[1] - KDE_GRID[0]
KDE_FLOOR = 1e-6
ROWS_AT_ONCE = 64
ZERO_SPREAD = 1e-9


def _positions(r: np.ndarray):
    """Grid cell and linear-binning fraction of each point and of its mirror image."""
    pts = np.concatenate([r, np.where(r < 0.5, -r, 2.0 - r)])
    pos = (pts - KDE_GRID[0]) / KDE_STEP
    j = np.floor(pos).astype(np.int64).clip(0, KDE_GRID.size - 2)
    return j, pos - j


def _hist_matrix(r: np.ndarray, values: np.ndarray) -> scipy.sparse.csr_matrix:
    """(G, n) sparse: sample i's linear split of itself and of its mirror, times values_i."""
    j, frac = _positions(r)
    v = np.concatenate([values, values])
    cols = np.tile(np.arange(r.size), 4)
    return scipy.sparse.csr_matrix((np.concatenate([(1 - frac) * v, frac * v]), (np.concatenate([j, j + 1]), cols)),
                                   shape=(KDE_GRID.size, r.size))


def _hist_matrices(r: np.ndarray, c: np.ndarray) -> scipy.sparse.csr_matrix:
    """(2G, n): the histogram matrix of all samples over that of the correct ones (one product)."""
    return scipy.sparse.vstack([_hist_matrix(r, np.ones_like(r)), _hist_matrix(r, c)]).tocsr()


def _kernels(bw: np.ndarray) -> tuple[np.ndarray, int]:
    """(2L + 1, b) triweight kernels with standard deviation bw, sampled at the grid step (columns)."""
    support = 3.0 * bw
    L = int(np.floor(support.max() / KDE_STEP))
    u = np.arange(-L, L + 1) * KDE_STEP
    z = np.clip(1.0 - (u[:, None] / support[None, :]) ** 2, 0.0, None)
    return 35.0 / 32.0 * z ** 3 / support[None, :], L


# The estimate reads the densities only on the grid points in [0, 1] (KDE_SEL); every point outside
# (0, 1) has density 0 and so never carries an integrand value into it.
KDE_SEL = np.flatnonzero((KDE_GRID >= 0) & (KDE_GRID <= 1))
KDE_INSIDE = ((KDE_GRID > 0) & (KDE_GRID < 1))[KDE_SEL]


def _smooth(hists: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Each column of hists (h, G, b) convolved with its own kernel ('same' alignment), on the grid
    points of KDE_SEL only: the input is cut to those points +- the kernel's half width L (exactly
    what they read), so the FFT is about half the grid's length."""
    ker, L = _kernels(bw)
    G = hists.shape[1]
    lo, hi = max(KDE_SEL[0] - L, 0), min(KDE_SEL[-1] + L + 1, G)
    x = hists[:, lo:hi]
    size = scipy.fft.next_fast_len(x.shape[1] + 2 * L, real=True)
    spec = scipy.fft.rfft(x, size, axis=1) * scipy.fft.rfft(ker, size, axis=0)[None]
    full = scipy.fft.irfft(spec, size, axis=1)
    return full[:, KDE_SEL + L - lo]


def kde_ece_from(hists: np.ndarray, n: np.ndarray, n_c: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """The estimate of the module docstring for columns of grid histograms hists (2, G, b): of all
    samples and of the correct ones."""
    s_all, s_cor = _smooth(hists, bw)
    inside = KDE_INSIDE[:, None]
    p2 = np.where(inside, s_all / n[None, :], 0.0)
    p1 = np.where(inside, s_cor / np.maximum(n_c, 1e-300)[None, :], 0.0)
    valid = np.maximum(p1, p2) > KDE_FLOOR
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.minimum(np.where(p2 > 0, (n_c / n)[None, :] * p1 / p2, 1.0), 1.0)
    integrand = np.abs(KDE_GRID[KDE_SEL][:, None] - acc) * p2
    last = np.maximum.accumulate(np.where(valid, np.arange(KDE_SEL.size)[:, None], -1), axis=0)
    carried = np.where(last >= 0, np.take_along_axis(integrand, np.maximum(last, 0), axis=0), 0.0)
    x = KDE_GRID[KDE_SEL]
    return np.trapezoid(carried, x, axis=0) / np.trapezoid(p2, x, axis=0)


def _moments(W: np.ndarray, r: np.ndarray, c: np.ndarray):
    """Per row: N, n_c, mean accuracy, the bandwidth, and the spread of all r (b,) arrays."""
    n, n_c = W.sum(axis=1), W @ c
    def spread(weights, total):
        m = weights @ r / np.maximum(total, 1e-300)
        return np.sqrt(np.maximum(weights @ (r * r) / np.maximum(total, 1e-300) - m * m, 0.0))
    s_cor, s_all = spread(W * c, n_c), spread(W, n)
    s = np.where((n_c >= 2) & (s_cor > ZERO_SPREAD), s_cor, s_all)
    return n, n_c, s * (2.0 * n) ** -0.2, s_all


def kde_ece_weighted(r: np.ndarray, c: np.ndarray, W: np.ndarray, mats=None) -> np.ndarray:
    """KDE-ECE of each row of the counts W (b, n) over the samples (r, c)."""
    A = mats if mats is not None else _hist_matrices(r, c)
    out = np.empty(W.shape[0])
    for start in range(0, W.shape[0], ROWS_AT_ONCE):
        w = W[start:start + ROWS_AT_ONCE]
        n, n_c, bw, s_all = _moments(w, r, c)
        point = s_all <= ZERO_SPREAD  # one confidence value: a point mass at it
        wt = np.ascontiguousarray(w.T)
        hists = np.asarray(A @ wt).reshape(2, KDE_GRID.size, -1)
        vals = kde_ece_from(hists, n, n_c, np.where(point, 1.0, bw))
        r0 = w @ r / n
        out[start:start + w.shape[0]] = np.where(point, np.abs(r0 - n_c / n), vals)
    return out


@metric("kde-ece", name="KDE-based ECE", higher_is_better=False, percent=True, header="KDE-ECE",
        definition="top-label L1 ECE with triweight KDEs of r (Zhang et al. 2020, their bandwidth rule)",
        needs=("conf",), default=False, binning="kernel")
def kde_ece(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        r, c = np.concatenate([x[0] for x in stats.conf_chunks()]), np.concatenate([x[1] for x in stats.conf_chunks()])
        return float(kde_ece_weighted(r, c, np.ones((1, r.size)))[0])
    r, c = stats.sample("conf"), stats.sample("correct")
    mats = cached(stats, "kde", lambda: _hist_matrices(r, c))
    weighted(stats, weights)
    return kde_ece_weighted(r, c, weights, mats)
