"""Kernel-smoothed calibration errors: smece (Blasiok & Nakkiran 2023, relplot's grid algorithm)
and sece (Gaussian-kernel regression surrogate of the meta-regularisation paper).

Both are written for a batch of resample weight columns Wt (n, b) — Wt = None means one column of
ones —
so that the bootstrap evaluates B resamples with the very same code as the point estimate.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

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


def grid_hist(f: np.ndarray, values: np.ndarray, points: int, Wt: np.ndarray | None,
              cache: dict | None = None, tag: str = "") -> np.ndarray:
    """Linear split of each sample's value onto a uniform grid of `points` on [0, 1] (relplot's
    smooth_round_to_grid), weighted by each column of Wt (n, b): returns (b, points) float64.
    `cache` keeps the sparse split matrix per (tag, points) across calls on the same samples."""
    if Wt is None:
        j, frac = _split(f, points)
        out = (np.bincount(j, weights=(1.0 - frac) * values, minlength=points)
               + np.bincount(j + 1, weights=frac * values, minlength=points))
        return out[None, :]
    if cache is None:
        a = grid_matrix(f, values, points)
    else:
        a = cache.get((tag, points))
        if a is None:
            a = cache[(tag, points)] = grid_matrix(f, values, points)
    return np.asarray(a @ Wt).T


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

    def __init__(self, conf, correct, Wt, grids: dict | None = None):
        self.f, self.resid, self.Wt, self.grids = conf, conf - correct, Wt, grids
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def hists(self, points: int):
        if points not in self.cache:
            self.cache[points] = (grid_hist(self.f, self.resid, points, self.Wt, self.grids, "smece-res"),
                                  grid_hist(self.f, np.ones_like(self.f), points, self.Wt, self.grids, "one"))
        return self.cache[points]

    def at(self, sigma: float, rows: np.ndarray) -> np.ndarray:
        """relplot.metrics.smooth_ece(f, y, sigma) for the given weight rows."""
        t = np.linspace(0.0, 1.0, max(round(10 / sigma), SMECE_MESH))
        points = max(2000, round(20 / sigma)) // 2 + 1
        h_res, h_one = self.hists(points)
        ys = _interpolate(t, _reflected_smooth(h_res[rows], sigma))
        dens = _interpolate(t, _reflected_smooth(h_one[rows], sigma)) + SMECE_DENS_EPS
        return np.abs(ys).sum(axis=1) / dens.sum(axis=1)


def smece(conf: np.ndarray, correct: np.ndarray, Wt: np.ndarray | None = None,
          grids: dict | None = None) -> np.ndarray:
    """smECE with relplot's bandwidth rule (search_param: accept sigma = 1, else bisect [0, 1] in 10
    steps for the fixed point sigma = smooth_ece(sigma), keep the lower end). Returns (b,)."""
    ev = _SmoothECE(conf, correct, Wt, grids)
    b = 1 if Wt is None else Wt.shape[1]
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
    return out


def sece(conf: np.ndarray, correct: np.ndarray, Wt: np.ndarray | None = None,
         bandwidth: float = SECE_BANDWIDTH, cache: dict | None = None) -> np.ndarray:
    """SECE = mean_i |acc_hat(r_i) - r_i| with acc_hat the Nadaraya-Watson regression of c on r,
    Gaussian kernel of the given bandwidth. The kernel sums are evaluated on a 2001-point grid
    (linear binning, as relplot does), so 10^7 rows cost O(n); error vs the exact O(n^2) sum is
    about 1e-4. Returns (b,)."""
    G = SECE_GRID
    h_c = grid_hist(conf, correct, G, Wt, cache, "sece-c")
    h_1 = grid_hist(conf, np.ones_like(conf), G, Wt, cache, "one")
    half = int(np.ceil(8 * bandwidth * (G - 1)))
    u = np.arange(-half, half + 1) / (G - 1)
    ker = np.exp(-0.5 * (u / bandwidth) ** 2)
    pad = lambda h: np.pad(h, ((0, 0), (half, half)))  # noqa: E731  zero outside [0, 1]
    num = np.ascontiguousarray(_fft_convolve_valid(pad(h_c), ker).T)  # (G, b)
    den = np.ascontiguousarray(_fft_convolve_valid(pad(h_1), ker).T)
    pos = conf * (G - 1)
    j = pos.astype(np.int64).clip(0, G - 2)
    fr = (pos - j)[:, None]
    num_i = num[j] * (1 - fr) + num[j + 1] * fr  # (n, b)
    den_i = den[j] * (1 - fr) + den[j + 1] * fr
    gap = np.abs(num_i / np.maximum(den_i, 1e-300) - conf[:, None])
    if Wt is None:
        return gap.mean(axis=0)
    return np.einsum("ij,ij->j", Wt, gap) / Wt.sum(axis=0)
