"""Kernel-smoothed calibration errors (docs/metrics.md): smece (Blasiok & Nakkiran 2023, relplot's
grid algorithm) and sece (the Gaussian-kernel regression surrogate of the meta-regularisation paper,
Bohdal et al. 2023).

Both read only grid histograms of the samples: the point estimate builds them chunk by chunk from
the packed (r, c) keys, a bootstrap block as one sparse product with the count weights, and the
same smoothing code then serves both (a (1, points) or a (b, points) batch).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, weighted

SMECE_EPS = 1e-3       # relplot smECE: bandwidths below eps are accepted outright
SMECE_REFINE = 10      # relplot smECE: bisection steps
SMECE_MESH = 200       # relplot config.smECE_mesh_pts
SMECE_DENS_EPS = 1e-4  # relplot BaseKernelMixin.smooth eps added to the density
SECE_BANDWIDTH = 0.01
SECE_GRID = 2001       # grid points on [0, 1] for sece's kernel sums (spacing 5e-4 = bandwidth / 20)


def _split(f: np.ndarray, points: int):
    pos = f * (points - 1)
    j = pos.astype(np.int64).clip(0, points - 2)
    return j, pos - j


def grid_matrix(f: np.ndarray, values: np.ndarray, points: int) -> scipy.sparse.csr_matrix:
    """(points, n) sparse matrix of grid_hist: column i holds sample i's linear split times its value."""
    j, frac = _split(f, points)
    n = f.shape[0]
    cols = np.concatenate([j, j + 1])
    rows = np.concatenate([np.arange(n), np.arange(n)])
    return scipy.sparse.csr_matrix((np.concatenate([(1.0 - frac) * values, frac * values]), (cols, rows)),
                                   shape=(points, n))


def _values(r: np.ndarray, c: np.ndarray, what: str) -> np.ndarray:
    return {"resid": lambda: r - c, "one": lambda: np.ones_like(r), "correct": lambda: c}[what]()


def grid_hist(stats: SampleStats, W: np.ndarray | None, points: int, what: str) -> np.ndarray:
    """Linear split of each sample's value (r - c, 1 or c) onto a uniform grid of `points` on [0, 1]
    (relplot's smooth_round_to_grid): (1, points) for the point estimate, (b, points) weighted by
    each row of W (the sparse split matrix is cached per grid on stats)."""
    if W is None:
        out = np.zeros(points)
        for r, c in stats.conf_chunks():
            j, frac = _split(r, points)
            v = _values(r, c, what)
            out += np.bincount(j, weights=(1.0 - frac) * v, minlength=points)
            out += np.bincount(j + 1, weights=frac * v, minlength=points)
        return out[None, :]
    r, c = stats.sample("conf"), stats.sample("correct")
    a = cached(stats, ("grid", what, points), lambda: grid_matrix(r, _values(r, c, what), points))
    return np.asarray(a @ weighted(stats, W)["Wt"]).T


def _fft_convolve_valid(x: np.ndarray, ker: np.ndarray) -> np.ndarray:
    """np.convolve(row, ker, 'valid') for every row of x, via a real FFT."""
    L, G = x.shape[1], ker.shape[0]
    size = scipy.fft.next_fast_len(L + G - 1, real=True)
    fx = scipy.fft.rfft(x, size, axis=1)
    fk = scipy.fft.rfft(ker, size)
    full = scipy.fft.irfft(fx * fk[None, :], size, axis=1)
    return full[:, G - 1: L]


def _reflected_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """relplot's ReflectedGaussianKernel.convolve on each row: reflect at both ends, convolve with the
    Gaussian sampled on linspace(0, 1, G) centred at 0.5, keep the middle G points."""
    G = values.shape[1]
    t = np.linspace(0.0, 1.0, G)
    ker = np.exp(-(t - 0.5) ** 2 / (2 * sigma * sigma)) / (np.sqrt(2 * np.pi) * sigma)
    ext = np.concatenate([values[:, ::-1][:, :-1], values, values[:, ::-1][:, 1:]], axis=1)
    return _fft_convolve_valid(ext, ker)[:, G // 2: G // 2 + G]


def _interpolate(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """relplot.kernels.interpolate on each row of y."""
    G = y.shape[1]
    inds = (t * (G - 1)).astype(np.int64).clip(0, G - 2)
    res = (t - inds / (G - 1)) * (G - 1)
    return y[:, inds] * (1 - res) + y[:, inds + 1] * res


class _SmoothECE:
    """Fixed-bandwidth smooth ECE for a batch of weight rows; grid histograms cached per grid size."""

    def __init__(self, stats: SampleStats, W: np.ndarray | None):
        self.stats, self.W = stats, W
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def hists(self, points: int):
        if points not in self.cache:
            self.cache[points] = (grid_hist(self.stats, self.W, points, "resid"),
                                  grid_hist(self.stats, self.W, points, "one"))
        return self.cache[points]

    def at(self, sigma: float, rows: np.ndarray) -> np.ndarray:
        """relplot.metrics.smooth_ece(f, y, sigma) for the given weight rows."""
        t = np.linspace(0.0, 1.0, max(round(10 / sigma), SMECE_MESH))
        points = max(2000, round(20 / sigma)) // 2 + 1
        h_res, h_one = self.hists(points)
        ys = _interpolate(t, _reflected_smooth(h_res[rows], sigma))
        dens = _interpolate(t, _reflected_smooth(h_one[rows], sigma)) + SMECE_DENS_EPS
        return np.abs(ys).sum(axis=1) / dens.sum(axis=1)


@metric("smece", name="smooth ECE", higher_is_better=False, percent=True, header="smECE",
        definition="smooth calibration error of Blasiok & Nakkiran (2023), relplot's smECE", needs=("conf",))
def smece(stats: SampleStats, weights: np.ndarray | None):
    """smECE with relplot's bandwidth rule (search_param: accept sigma = 1, else bisect [0, 1] in 10
    steps for the fixed point sigma = smooth_ece(sigma), keep the lower end)."""
    ev = _SmoothECE(stats, weights)
    b = 1 if weights is None else weights.shape[0]
    every = np.arange(b)

    def predicate(sig: np.ndarray, rows: np.ndarray) -> np.ndarray:
        ok = np.empty(rows.shape[0], dtype=bool)
        for s in np.unique(sig):
            sel = sig == s
            ok[sel] = True if s < SMECE_EPS else s < ev.at(float(s), rows[sel])
        return ok

    accept1 = predicate(np.ones(b), every)
    start, end = np.ones(b), np.zeros(b)
    for _ in range(SMECE_REFINE):
        mid = (start + end) / 2
        ok = predicate(mid, every)
        end = np.where(ok, mid, end)
        start = np.where(ok, start, mid)
    sigma = np.where(accept1, 1.0, start)
    out = np.empty(b)
    for s in np.unique(sigma):
        sel = sigma == s
        out[sel] = ev.at(float(s), every[sel])
    return float(out[0]) if weights is None else out


def _sece_gaps(conf: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """|acc_hat(r_i) - r_i| per sample and weight column, acc_hat interpolated from the grid."""
    G = num.shape[0]
    pos = conf * (G - 1)
    j = pos.astype(np.int64).clip(0, G - 2)
    fr = (pos - j)[:, None]
    num_i = num[j] * (1 - fr) + num[j + 1] * fr
    den_i = den[j] * (1 - fr) + den[j + 1] * fr
    return np.abs(num_i / np.maximum(den_i, 1e-300) - conf[:, None])


@metric("sece", name="smooth ECE surrogate (SECE)", higher_is_better=False, percent=True, header="SECE",
        definition="mean |acc_hat(r_i) - r_i|, Gaussian-kernel (h = 0.01) regression of c on r", needs=("conf",))
def sece(stats: SampleStats, weights: np.ndarray | None, bandwidth: float = SECE_BANDWIDTH):
    """SECE = mean_i |acc_hat(r_i) - r_i| with acc_hat the Nadaraya-Watson regression of c on r,
    Gaussian kernel of the given bandwidth. The kernel sums are evaluated on a 2001-point grid
    (linear binning, as relplot does), so 10^7 rows cost O(n); error vs the exact O(n^2) sum is
    about 1e-4."""
    G = SECE_GRID
    half = int(np.ceil(8 * bandwidth * (G - 1)))
    u = np.arange(-half, half + 1) / (G - 1)
    ker = np.exp(-0.5 * (u / bandwidth) ** 2)

    def smoothed(what: str) -> np.ndarray:  # (G, b); zero outside [0, 1]
        h = np.pad(grid_hist(stats, weights, G, what), ((0, 0), (half, half)))
        return np.ascontiguousarray(_fft_convolve_valid(h, ker).T)

    num, den = smoothed("correct"), smoothed("one")
    if weights is None:
        return float(sum(_sece_gaps(r, num, den).sum() for r, _ in stats.conf_chunks()) / stats.n)
    w = weighted(stats, weights)
    return np.einsum("ij,ij->j", w["Wt"], _sece_gaps(stats.sample("conf"), num, den)) / w["total"]
