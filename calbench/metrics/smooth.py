"""Kernel-smoothed calibration errors (docs/metrics.md): smece (Blasiok & Nakkiran 2023, relplot's
grid algorithm) and sece (the Gaussian-kernel regression surrogate of the meta-regularisation paper,
Bohdal et al. 2023).

Both read only grid histograms of the samples: the point estimate builds them chunk by chunk from
the packed (r, c) keys, a bootstrap block as one sparse product with the count weights, and the
same smoothing code then serves both (a (1, points) or a (b, points) batch). Everything is linear
in the histograms, so a bootstrap block reads them only on the grid cells the samples occupy, and
smooth_ece's smoothing-and-interpolation is applied as whichever of three equal linear forms is
cheapest (_SmoothECE.plan): a product with the kernel's leading spectral bins, with the operator
written out for the occupied cells, or the FFT convolution itself.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.sparse

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached, weighted

SMECE_EPS = 1e-3       # relplot smECE: bandwidths below eps are accepted outright
SMECE_REFINE = 10      # relplot smECE: bisection steps
SMECE_MESH = 200       # relplot config.smECE_mesh_pts
SMECE_DENS_EPS = 1e-4  # relplot BaseKernelMixin.smooth eps added to the density
SMECE_TAIL = 12.0      # kernel truncated at 12 sigma (tail mass exp(-72))
SMECE_MARGIN = 1e-9    # relative margin under which a bound does not decide a bisection step
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


def point_hists(stats: SampleStats, points: int, resid: bool) -> dict[str, np.ndarray]:
    """The point estimate's grid histograms ("one", "correct" and, if resid, "resid") in one pass
    over the packed key: per (cell j, c) the count and the sum of the split fractions f (and of r,
    f r), so that cell j gets sum (1 - f) v and cell j + 1 sum f v of every sample in cell j
    (grid_hist's linear split; equal to rounding). Cached on stats per grid."""
    key = ("point_hists", points, resid)
    if key in stats.cache:
        return stats.cache[key]
    m = 2 * points
    sums = np.zeros((4 if resid else 2, m))
    for start in range(0, stats.n, 1 << 20):
        k = stats.key[start:start + (1 << 20)]
        r = (k >> np.uint64(1)).view(np.float64)
        j, f = _split(r, points)
        cell = (j << 1) | (k & np.uint64(1)).astype(np.int64)  # 2 j + c
        sums[0] += np.bincount(cell, minlength=m)
        sums[1] += np.bincount(cell, f, m)
        if resid:
            sums[2] += np.bincount(cell, r, m)
            sums[3] += np.bincount(cell, f * r, m)
    count, frac = sums[0].reshape(points, 2), sums[1].reshape(points, 2)

    def spread(left, right):  # left[j] to cell j, right[j] to cell j + 1
        out = left.copy()
        out[1:] += right[:-1]
        return out

    out = {"one": spread((count - frac).sum(axis=1), frac.sum(axis=1)),
           "correct": spread(count[:, 1] - frac[:, 1], frac[:, 1])}
    if resid:
        rsum, frsum = sums[2].reshape(points, 2).sum(axis=1), sums[3].reshape(points, 2).sum(axis=1)
        out["resid"] = spread(rsum - frsum - (count[:, 1] - frac[:, 1]), frsum - frac[:, 1])
    stats.cache[key] = out
    return out


def grid_hist(stats: SampleStats, W: np.ndarray | None, points: int, what: str) -> np.ndarray:
    """Linear split of each sample's value (r - c, 1 or c) onto a uniform grid of `points` on [0, 1]
    (relplot's smooth_round_to_grid): (1, points) for the point estimate (point_hists), (b, points)
    weighted by each row of W (the sparse split matrix is cached per grid on stats)."""
    if W is None:
        hists = point_hists(stats, points, resid=what == "resid" or ("point_hists", points, True) in stats.cache)
        return hists[what][None, :]
    return np.asarray(split_matrix(stats, what, points) @ weighted(stats, W)["Wt"]).T


def split_matrix(stats: SampleStats, what: str, points: int) -> scipy.sparse.csr_matrix:
    """grid_matrix of the kept samples' values (r - c, 1 or c), cached on stats per grid."""
    r, c = stats.sample("conf"), stats.sample("correct")
    return cached(stats, ("grid", what, points), lambda: grid_matrix(r, _values(r, c, what), points))


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
    Gaussian sampled on linspace(0, 1, G) centred at 0.5, keep the middle G points (the reference
    form; smece uses the equivalent truncated operator of _Bandwidth)."""
    G = values.shape[1]
    t = np.linspace(0.0, 1.0, G)
    ker = np.exp(-(t - 0.5) ** 2 / (2 * sigma * sigma)) / (np.sqrt(2 * np.pi) * sigma)
    ext = np.concatenate([values[:, ::-1][:, :-1], values, values[:, ::-1][:, 1:]], axis=1)
    return _fft_convolve_valid(ext, ker)[:, G // 2: G // 2 + G]


def _reflect(p: np.ndarray, G: int) -> np.ndarray:
    """Grid index of position p of the once-reflected grid (..., 1, 0, 1, ..., G-1, G-2, ...)."""
    return np.where(p < 0, -p, np.where(p > G - 1, 2 * (G - 1) - p, p))


class _Bandwidth:
    """Everything of relplot's smooth_ece(sigma) that does not depend on the samples, built once per
    sigma: the grid sizes, the interpolation onto the mesh t, and the reflected Gaussian smoothing as a
    gather plus one FFT convolution with the kernel truncated at SMECE_TAIL sigma (the dropped tail
    weighs exp(-72) ~ 1e-31 of the kernel: exact in float64, and a far shorter FFT for small sigma),
    circular at the first fast size >= G + L - 1 (the kept outputs L - 1 .. L + G - 2 of the linear
    convolution, G + 2L - 2 long, are then free of wrapped terms).

    `u` is the functional "sum over the mesh of the interpolated smoothing", so sum_t dens_t =
    u . h_one + T eps exactly, and for the residual histogram |u . h_res| <= sum_t |ys_t| <= u . |h_res|
    (every weight of the smoothing and the interpolation is >= 0): bounds that decide most
    bisection steps without any convolution."""

    def __init__(self, sigma: float):
        self.T = max(round(10 / sigma), SMECE_MESH)
        G = self.points = max(2000, round(20 / sigma)) // 2 + 1
        t = np.linspace(0.0, 1.0, self.T)
        self.inds = (t * (G - 1)).astype(np.int64).clip(0, G - 2)
        self.res = (t - self.inds / (G - 1)) * (G - 1)
        k = np.arange(G)
        keep = np.abs(k / (G - 1) - 0.5) <= SMECE_TAIL * sigma
        klo, khi = int(k[keep][0]), int(k[keep][-1])
        tk = np.linspace(0.0, 1.0, G)[klo:khi + 1]
        ker = np.exp(-(tk - 0.5) ** 2 / (2 * sigma * sigma)) / (np.sqrt(2 * np.pi) * sigma)
        L, c = ker.shape[0], G // 2
        self.gather = _reflect(np.arange(c - khi, G + c - klo), G)  # (G - 1 + L,) grid positions
        # circular size >= G + L - 1: the wrapped outputs (m >= size, m <= G + 2L - 3) land below L - 1
        self.L, self.size = L, scipy.fft.next_fast_len(G + L - 1, real=True)
        self.fker = scipy.fft.rfft(ker, self.size)
        self.klo, self.ker = klo, ker
        u = np.bincount(self.inds, 1.0 - self.res, G) + np.bincount(self.inds + 1, self.res, G)
        self.u = np.bincount(self.gather, np.convolve(u, ker[::-1]), G)

    @functools.cached_property
    def full_fker(self) -> np.ndarray:
        """The spectrum of the kernel zero-padded to the whole grid at the shared layout of
        _full_layout(points): the same convolution (the zeros add nothing) on a spectrum of the
        residual histogram that every bandwidth of this grid shares."""
        ker = np.zeros(self.points)
        ker[self.klo:self.klo + self.ker.shape[0]] = self.ker
        return scipy.fft.rfft(ker, _full_layout(self.points)[1])

    def smooth(self, h: np.ndarray) -> np.ndarray:
        """relplot's reflected Gaussian smoothing of each row of h (G points)."""
        x = h[:, self.gather]
        full = scipy.fft.irfft(scipy.fft.rfft(x, self.size, axis=1) * self.fker, self.size, axis=1)
        return full[:, self.L - 1: self.L - 1 + self.points]

    def mesh_abs_mass(self, y: np.ndarray) -> np.ndarray:
        """sum_t |ys_t|: the smoothed residuals y (rows of G points) interpolated onto the mesh."""
        return np.abs(y[:, self.inds] * (1 - self.res) + y[:, self.inds + 1] * self.res).sum(axis=1)

    def mesh_matrix(self, cells: np.ndarray) -> np.ndarray:
        """(len(cells), T) matrix M with h[cells] @ M = the smoothed h interpolated onto the mesh, for h
        zero off `cells`, written out from the kernel's values (no FFT). Algebra: smooth(h)_g = sum over
        i = klo..khi of ker_i h[reflect(g + c - i)] (c = G // 2: the linear convolution of smooth, read
        at its kept outputs), so cell g' gets ker_(g + c - p) from each of its images p in {g', -g',
        2 (G - 1) - g'} (the distinct positions of the once-reflected grid) with klo <= g + c - p <= khi;
        the mesh value at t is (1 - res_t) times the smoothing at inds_t plus res_t times it at inds_t + 1."""
        G, c, span = self.points, self.points // 2, 2 * (self.points - 1)
        padded = np.zeros(2 * span + G)  # ker_i at i + span; zero outside klo..khi (g + c - p >= c - span)
        padded[self.klo + span: self.klo + span + self.ker.size] = self.ker
        at0 = self.inds + c + span
        out = np.zeros((cells.size, self.T))
        nowhere = c + span  # an image there reads zeros only (indices inds_t, inds_t + 1 < klo + span)
        for p in (cells, np.where(cells > 0, -cells, nowhere), np.where(cells < G - 1, span - cells, nowhere)):
            i = at0 - p[:, None]
            lo, hi = padded[i], padded[i + 1]
            hi -= lo
            hi *= self.res  # (1 - res) lo + res hi, as lo + res (hi - lo)
            lo += hi
            out += lo
        return out


SMECE_SHARED_GRID = 1001  # the grid of every bandwidth >= 0.01


@functools.lru_cache(maxsize=8)
def _full_layout(G: int) -> tuple[np.ndarray, int]:
    """The reflected gather of the untruncated kernel (klo = 0, khi = G - 1) and its FFT size: the
    linear convolution spans 3G - 2 points, but a circular one of 2G - 1 or more leaves the G kept
    ones (G - 1 .. 2G - 2) free of wrapped terms. The size is the power of two above 2G - 2."""
    c = G // 2
    return _reflect(np.arange(c - (G - 1), G + c), G), 1 << (2 * G - 2).bit_length()


@functools.lru_cache(maxsize=4096)  # bisection midpoints are dyadic: the same few recur across runs
def _bandwidth(sigma: float) -> _Bandwidth:
    return _Bandwidth(sigma)


SMECE_SPECTRAL_CUT = 9.0    # kernel spectrum kept up to exp(-9^2 / 2) ~ 3e-18 of its peak
SMECE_SPECTRAL_BINS = 192   # at most this many bins (sigma >= ~0.0153): beyond, 2 K T outgrows the FFT
SMECE_BASIS_CELLS = 256     # up to this many occupied cells the spectra are h @ Phi, above by an rfft
# costs in multiply-adds of a matrix product (~0.08 ns here): one entry of mesh_matrix built (~15 ns),
# one row smoothed by FFT and interpolated (~20 us)
SMECE_BUILD_COST = 190
SMECE_FFT_ROW_COST = 250_000


@functools.lru_cache(maxsize=1)
def _spectral_basis() -> np.ndarray:
    """(G, 2 BINS) real matrix Phi of the shared grid with h @ Phi = (Re X_0, Im X_0, Re X_1, ...), X
    the rfft (size N) of h's reflected gather (_full_layout): Phi[g, k] = sum over the positions q
    that gather g of e^(-2 pi i k q / N), so the first bins of every row's spectrum are one product
    over the cells the samples occupy (instead of an FFT of N points a row)."""
    gather, size = _full_layout(SMECE_SHARED_GRID)
    k, q = np.arange(SMECE_SPECTRAL_BINS)[None, :], np.arange(gather.size)[:, None]
    phi = np.zeros((SMECE_SHARED_GRID, SMECE_SPECTRAL_BINS), dtype=complex)
    np.add.at(phi, gather, np.exp(-2j * np.pi / size * ((k * q) % size)))
    return phi.view(np.float64)


@functools.lru_cache(maxsize=256)  # smece's sigma = j / 1024: the 41 with a matrix (23 MB) recur in every run
def _spectral_mesh(sigma: float) -> np.ndarray | None:
    """(2K, T) real matrix E with (Re X_0, Im X_0, ..., Re X_K-1, Im X_K-1) @ E = the smoothed residuals
    on the mesh, X the spectrum of a row (_spectral_basis); None off the shared grid, where the
    window [0, 1] cuts the kernel (no Gaussian spectrum: sigma > 1/18) or K > SMECE_SPECTRAL_BINS.

    Algebra: the kept outputs are ys_g = full[G - 1 + g], full[m] = (1/N) sum_k w_k Re(X_k F_k
    e^(2 pi i k m / N)) (w = 1 at k = 0 and N/2, else 2; F the kernel's spectrum, full_fker), and the
    mesh value (1 - res_t) ys[inds_t] + res_t ys[inds_t + 1] is linear in ys: with Z_kt = (w_k / N) F_k
    ((1 - res_t) e^(i th_k m0_t) + res_t e^(i th_k m1_t)), mesh_t = sum_k Re X_k Re Z_kt - Im X_k Im Z_kt.
    A Gaussian of s = sigma (G - 1) grid steps has |F_k| ~ F_0 exp(-(2 pi k s / N)^2 / 2): the bins
    k >= K = 9 N / (2 pi s) weigh under 3e-18 F_0 and are dropped (each moves a mesh value by at most
    (2 / N) |F_k| sum_g |h_g|: float rounding of the value; test: equal to the FFT smoothing)."""
    bw = _bandwidth(sigma)
    G = bw.points
    if G != SMECE_SHARED_GRID or bw.ker[0] > np.exp(-SMECE_SPECTRAL_CUT ** 2 / 2) * bw.ker.max():
        return None
    size = _full_layout(G)[1]
    K = int(np.ceil(SMECE_SPECTRAL_CUT * size / (2 * np.pi * sigma * (G - 1))))
    if K > SMECE_SPECTRAL_BINS:
        return None
    k = np.arange(K)[:, None]
    weight = np.where((k == 0) | (2 * k == size), 1.0, 2.0) / size * bw.full_fker[:K, None]
    m0 = G - 1 + bw.inds[None, :]

    def wave(m):  # e^(i th_k m), the angle reduced exactly in integers
        return np.exp(2j * np.pi / size * ((k * m) % size))

    Z = weight * ((1.0 - bw.res) * wave(m0) + bw.res * wave(m0 + 1))
    E = np.empty((2 * K, bw.T))
    E[0::2], E[1::2] = Z.real, -Z.imag
    return E


class _SmoothECE:
    """smooth_ece(sigma) for a batch of weight rows: grid histograms cached per grid size, every
    computed value kept per (sigma, row), and sigma < smooth_ece(sigma) decided from the bounds of
    _Bandwidth when they settle it (the value itself is then never needed). On the shared grid the
    residual histograms are read on the cells some sample occupies (`occupied`: a few hundred of
    the 1001 for small sets), for the bounds and for the exact values (mesh_mass)."""

    def __init__(self, stats: SampleStats, W: np.ndarray | None):
        self.stats, self.W = stats, W
        self.b = 1 if W is None else W.shape[0]
        self.hist_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.values: dict[float, np.ndarray] = {}
        self.cell_hists: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # on_cells
        self.abs_H: np.ndarray | None = None     # |h_res| on its cells
        self.X: np.ndarray | None = None         # (b, 2 BINS) their first spectral bins (spectra)
        self.X_width = 0                         # columns of X computed so far
        self.direct: dict[float, np.ndarray] = {}  # mesh_matrix(cells) per bandwidth

    def hists(self, points: int):
        if points not in self.hist_cache:
            self.hist_cache[points] = (np.ascontiguousarray(grid_hist(self.stats, self.W, points, "resid")),
                                       np.ascontiguousarray(grid_hist(self.stats, self.W, points, "one")))
        return self.hist_cache[points]

    def on_cells(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The shared grid's cells where some sample puts a nonzero value ("resid": r - c, "one": 1)
        and every row's histogram there, (b, cells): for count rows (A @ W^T)[cells]^T with A the
        split_matrix (one sparse pass over the counts; the cells found once per set)."""
        if what not in self.cell_hists:
            G = SMECE_SHARED_GRID
            if self.W is None:
                h = self.hists(G)[0 if what == "resid" else 1]
                cells = np.flatnonzero(h[0])
                self.cell_hists[what] = cells, h[:, cells]
            else:
                A = split_matrix(self.stats, what, G)
                cells = cached(self.stats, ("cells", what, G),  # once per set: A has 2n entries
                               lambda: np.flatnonzero(np.asarray(abs(A).sum(axis=1)).ravel()))
                H = np.asarray(A @ weighted(self.stats, self.W)["Wt"])[cells]
                self.cell_hists[what] = cells, np.ascontiguousarray(H.T)
        return self.cell_hists[what]

    def occupied(self) -> tuple[np.ndarray, np.ndarray]:
        """on_cells("resid"): the cells and residual histograms every exact evaluation reads."""
        return self.on_cells("resid")

    def residuals(self, points: int, rows: np.ndarray) -> np.ndarray:
        """(rows, points) residual histograms; on the shared grid with count rows from occupied()."""
        if points != SMECE_SHARED_GRID or self.W is None:
            return self.hists(points)[0][rows]
        cells, H = self.occupied()
        h = np.zeros((rows.size, points))
        h[:, cells] = H[rows]
        return h

    def density(self, bw: _Bandwidth, rows: np.ndarray) -> np.ndarray:
        """sum_t dens_t = u . h_one + T eps of the given rows (on the shared grid over on_cells)."""
        if bw.points != SMECE_SHARED_GRID:
            return self.hists(bw.points)[1][rows] @ bw.u + bw.T * SMECE_DENS_EPS
        cells, H_one = self.on_cells("one")
        return H_one[rows] @ bw.u[cells] + bw.T * SMECE_DENS_EPS

    def _known(self, sigma: float) -> np.ndarray:
        return self.values.setdefault(sigma, np.full(self.b, np.nan))

    def spectra(self, width: int) -> np.ndarray:
        """(b, >= width) leading columns of every row's first spectral bins (_spectral_basis): for few
        occupied cells h[cells] @ Phi[cells], columns added as wider ones are asked for; else all at
        once by an rfft of the gathered rows (the same numbers, to rounding)."""
        cells, H = self.occupied()
        if self.X is None:
            self.X, self.X_width = np.empty((self.b, 2 * SMECE_SPECTRAL_BINS)), 0
            if cells.size > SMECE_BASIS_CELLS:
                gather, size = _full_layout(SMECE_SHARED_GRID)
                x = np.zeros((self.b, size))
                x[:, :gather.size] = self.residuals(SMECE_SHARED_GRID, np.arange(self.b))[:, gather]
                self.X[:] = scipy.fft.rfft(x, axis=1)[:, :SMECE_SPECTRAL_BINS].view(np.float64)
                self.X_width = self.X.shape[1]
        if width > self.X_width:
            new = min(self.X.shape[1], max(width, self.X_width + 64))
            self.X[:, self.X_width:new] = H @ _spectral_basis()[cells, self.X_width:new]
            self.X_width = new
        return self.X

    def plan(self, sigma: float, rows: int) -> str:
        """The cheapest exact evaluation of `rows` rows at sigma (costs in multiply-adds): "spectral"
        (rows 2K T), "direct" (rows D T, plus building mesh_matrix for the D occupied cells unless
        built for this run) or "fft" (per row)."""
        bw = _bandwidth(sigma)
        if bw.points != SMECE_SHARED_GRID:
            return "fft"
        E, D = _spectral_mesh(sigma), self.occupied()[0].size
        costs = {"fft": rows * SMECE_FFT_ROW_COST,
                 "direct": (rows + (0 if sigma in self.direct else SMECE_BUILD_COST)) * D * bw.T}
        if E is not None:
            costs["spectral"] = rows * E.size
        return min(costs, key=costs.get)

    def mesh_mass(self, sigma: float, rows: np.ndarray) -> np.ndarray:
        """sum_t |ys_t| of the given rows at sigma, by the plan: spectra @ _spectral_mesh, h[cells] @
        mesh_matrix(cells) or the FFT smoothing of each row."""
        how, bw = self.plan(sigma, rows.size), _bandwidth(sigma)
        if how == "fft":
            return bw.mesh_abs_mass(bw.smooth(self.residuals(bw.points, rows)))
        if how == "spectral":
            E = _spectral_mesh(sigma)
            X = self.spectra(E.shape[0])
            mesh = (X[:, :E.shape[0]] if rows.size == self.b else X[rows, :E.shape[0]]) @ E
        else:
            cells, H = self.occupied()
            if sigma not in self.direct:
                self.direct[sigma] = bw.mesh_matrix(cells)
            mesh = (H if rows.size == self.b else H[rows]) @ self.direct[sigma]
        return np.abs(mesh, out=mesh).sum(axis=1)

    def at(self, sigma: float, rows: np.ndarray, dens: np.ndarray | None = None) -> np.ndarray:
        """relplot.metrics.smooth_ece(f, y, sigma) for the given weight rows; dens: their sums
        u . h_one + T eps if already known (masses)."""
        known, bw = self._known(sigma), _bandwidth(sigma)
        missing = np.isnan(known[rows])
        todo = rows[missing]
        if todo.size:
            if dens is None:
                dens = self.density(bw, todo)
            else:
                dens = dens[missing]
            known[todo] = self.mesh_mass(sigma, todo) / dens
        return known[rows]

    def _shared_products(self, U: np.ndarray) -> np.ndarray:
        """(b, 3, S): u . h_one, u . h_res and u . |h_res| of every weight row on the shared grid for
        each column u of U, read on the occupied cells (on_cells; the others hold zeros): at most
        1001 of them instead of the n samples of W @ (A^T U)."""
        cells, H = self.occupied()
        cells_one, H_one = self.on_cells("one")
        if self.abs_H is None:
            self.abs_H = np.abs(H)
        U_res = U[cells]
        return np.stack([H_one @ U[cells_one], H @ U_res, self.abs_H @ U_res], axis=1)

    def masses(self, sig: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(3, len(rows)): u . h_one, u . h_res and u . |h_res| of each row at its own bandwidth
        sig[i] (the density's sum and both bounds of _Bandwidth). Rows on the shared grid get all
        their bandwidths' u from one set of products (_shared_products)."""
        out = np.empty((3, rows.size))
        uniq, inv = np.unique(sig[rows], return_inverse=True)
        bws = [_bandwidth(float(v)) for v in uniq]
        shared = np.array([bw.points == SMECE_SHARED_GRID for bw in bws])
        if shared.any():
            prod = self._shared_products(np.stack([bw.u for bw, sh in zip(bws, shared) if sh], axis=1))
            at = np.flatnonzero(shared[inv])
            out[:, at] = prod[rows[at], :, (np.cumsum(shared) - 1)[inv[at]]].T
        for j in np.flatnonzero(~shared):
            at = np.flatnonzero(inv == j)
            h_res, h_one = self.hists(bws[j].points)
            u, r = bws[j].u, rows[at]
            out[:, at] = h_one[r] @ u, h_res[r] @ u, np.abs(h_res[r]) @ u
        out[0] += np.array([bw.T for bw in bws])[inv] * SMECE_DENS_EPS
        return out

    def exceeds(self, sig: np.ndarray) -> np.ndarray:
        """sig[i] < smooth_ece(sig[i]) for each row i; below SMECE_EPS always; rows the bounds settle
        (with a 1e-9 relative margin, far above the rounding of either side) are decided without a
        convolution, the others by smooth_ece itself."""
        ok = np.ones(self.b, dtype=bool)
        rows = np.flatnonzero(sig >= SMECE_EPS)
        if rows.size == 0:
            return ok
        dens, signed, absolute = self.masses(sig, rows)
        s = sig[rows]
        low_ok = np.abs(signed) / dens > s * (1 + SMECE_MARGIN)
        open_ = ~low_ok & (absolute / dens >= s * (1 - SMECE_MARGIN))
        ok[rows] = low_ok
        undecided, dens_of = rows[open_], dens[open_]
        for v in np.unique(sig[undecided]):
            pick = sig[undecided] == v
            ok[undecided[pick]] = v < self.at(float(v), undecided[pick], dens_of[pick])
        return ok

    def by_sigma(self, sig: np.ndarray, fn) -> np.ndarray:
        """fn(sigma, rows) gathered over the distinct values of the per-row bandwidths sig."""
        out, every = None, np.arange(self.b)
        for s in np.unique(sig):
            sel = sig == s
            part = fn(float(s), every[sel])
            out = np.empty(self.b, dtype=part.dtype) if out is None else out
            out[sel] = part
        return out


@metric("smece", name="smooth ECE", higher_is_better=False, percent=True, header="smECE",
        definition="smooth calibration error of Blasiok & Nakkiran (2023), relplot's smECE", needs=("conf",),
        binning="kernel")
def smece(stats: SampleStats, weights: np.ndarray | None):
    """smECE with relplot's bandwidth rule (search_param: accept sigma = 1, else bisect [0, 1] in 10
    steps for the fixed point sigma = smooth_ece(sigma), keep the lower end). Every decision is the one
    relplot takes; most are settled by bounds (_SmoothECE.exceeds), the others by smooth_ece evaluated
    the cheapest of three equal ways (_SmoothECE.plan: a product with a spectral matrix, with the
    mesh operator of the occupied cells, or the FFT smoothing), and smooth_ece at the chosen
    bandwidth is usually known from the last decision at it."""
    ev = _SmoothECE(stats, weights)
    accept1 = ev.exceeds(np.ones(ev.b))
    start, end = np.ones(ev.b), np.zeros(ev.b)
    for _ in range(SMECE_REFINE):
        mid = (start + end) / 2
        ok = ev.exceeds(mid)
        end = np.where(ok, mid, end)
        start = np.where(ok, start, mid)
    out = ev.by_sigma(np.where(accept1, 1.0, start), ev.at)
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


def _sece_point_gaps(stats: SampleStats, num: np.ndarray, den: np.ndarray) -> float:
    """mean_i |acc_hat(r_i) - r_i| for the point estimate, one pass over the packed key (r only),
    the interpolation as num_j + f (num_j+1 - num_j) from 1-d gathers (_sece_gaps' value, to rounding)."""
    G = num.shape[0]
    lo_num, step_num, lo_den, step_den = num[:-1], np.diff(num), den[:-1], np.diff(den)
    total = 0.0
    for start in range(0, stats.n, 1 << 20):
        r = (stats.key[start:start + (1 << 20)] >> np.uint64(1)).view(np.float64)
        j, f = _split(r, G)
        gap = np.take(lo_num, j) + f * np.take(step_num, j)
        gap /= np.maximum(np.take(lo_den, j) + f * np.take(step_den, j), 1e-300)
        gap -= r
        total += np.abs(gap, out=gap).sum()
    return float(total / stats.n)


SECE_GAP_ROWS = 2048  # samples per block of the bootstrap's per-sample gaps
SECE_DENSE_MAX = 512  # sets up to this size: the (n, n) operator of _sece_operators (BLAS beats the FFTs)


def _sece_kernel(bandwidth: float) -> tuple[int, np.ndarray]:
    """The Gaussian kernel on the sece grid, cut at 8 bandwidths: (half width, 2 half + 1 values)."""
    half = int(np.ceil(8 * bandwidth * (SECE_GRID - 1)))
    u = np.arange(-half, half + 1) / (SECE_GRID - 1)
    return half, np.exp(-0.5 * (u / bandwidth) ** 2)


def _sece_operators(r: np.ndarray, c: np.ndarray, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) matrices Q_num, Q_den with Q @ w = the grid kernel sums of sece interpolated at each
    sample (linear binning onto the grid, the zero-padded convolution, linear interpolation: all
    linear in the counts w). Entry [i', i] = v_i sum over the two grid nodes of each of K(node
    distance) times the split fractions; the FFT path computes the same sums."""
    half, ker = _sece_kernel(bandwidth)
    j, f = _split(r, SECE_GRID)
    D = j[:, None] - j[None, :]

    def K(d):
        return np.where(np.abs(d) <= half, ker[np.clip(d + half, 0, 2 * half)], 0.0)

    fi, fj = f[:, None], f[None, :]
    Q = (1 - fi) * (1 - fj) * K(D) + (1 - fi) * fj * K(D - 1) + fi * (1 - fj) * K(D + 1) + fi * fj * K(D)
    return Q * c[None, :], Q


def _sece_factors(r: np.ndarray, c: np.ndarray, bandwidth: float) -> tuple:
    """The operators of _sece_operators as Q_den = P^T S P and Q_num = P^T S P diag(c): P (D, n) the
    linear split of each sample onto the D grid nodes that some sample's split reaches (sparse, two
    entries a column), S (D, D) the kernel between those nodes, K(node distance). Returns (P,
    P diag(c), P^T, S): D^2 instead of n^2 multiply-adds a count row when the nodes are fewer."""
    half, ker = _sece_kernel(bandwidth)
    j, f = _split(r, SECE_GRID)
    nodes, node_of = np.unique(np.concatenate([j, j + 1]), return_inverse=True)
    n = r.size
    P = scipy.sparse.csr_matrix((np.concatenate([1 - f, f]), (node_of, np.tile(np.arange(n), 2))),
                                shape=(nodes.size, n))
    d = nodes[:, None] - nodes[None, :]
    S = np.where(np.abs(d) <= half, ker[np.clip(d + half, 0, 2 * half)], 0.0)
    return P, P.multiply(c[None, :]).tocsr(), P.T.tocsr(), S


def _sece_linear(r: np.ndarray, c: np.ndarray, bandwidth: float):
    """_sece_factors where the grid nodes reached are fewer than the samples, else _sece_operators."""
    j = _split(r, SECE_GRID)[0]
    if np.unique(np.concatenate([j, j + 1])).size < r.size:
        return _sece_factors(r, c, bandwidth)
    return _sece_operators(r, c, bandwidth)


def _sece_dense(stats: SampleStats, weights: np.ndarray, bandwidth: float) -> np.ndarray:
    """sece of every count row through _sece_linear: two (n, n) x (n, b) products, or the factored
    P^T (S [P_c W^T, P W^T]) (one (D, D) x (D, 2b) product between sparse ones)."""
    r, c = stats.sample("conf"), stats.sample("correct")
    ops = cached(stats, ("sece", bandwidth), lambda: _sece_linear(r, c, bandwidth))
    w = weighted(stats, weights)
    Wt, b = w["Wt"], weights.shape[0]
    if len(ops) == 2:
        num, den = ops[0] @ Wt, ops[1] @ Wt
    else:
        P, P_c, PT, S = ops
        both = PT @ (S @ np.hstack([P_c @ Wt, P @ Wt]))
        num, den = both[:, :b], both[:, b:]
    gaps = np.abs(num / np.maximum(den, 1e-300) - r[:, None])
    return np.einsum("ij,ij->j", Wt, gaps) / w["total"]


@metric("sece", name="smooth ECE surrogate (SECE)", higher_is_better=False, percent=True, header="SECE",
        definition="mean |acc_hat(r_i) - r_i|, Gaussian-kernel (h = 0.01) regression of c on r", needs=("conf",),
        binning="kernel")
def sece(stats: SampleStats, weights: np.ndarray | None, bandwidth: float = SECE_BANDWIDTH):
    """SECE = mean_i |acc_hat(r_i) - r_i| with acc_hat the Nadaraya-Watson regression of c on r,
    Gaussian kernel of the given bandwidth. The kernel sums are evaluated on a 2001-point grid
    (linear binning, as relplot does), so 10^7 rows cost O(n); error vs the exact O(n^2) sum is
    about 1e-4. A bootstrap of a small set (n <= SECE_DENSE_MAX) applies the same grid sums as one
    linear operator to all count rows at once (matrix products instead of FFTs): (n, n), or
    factored through the D grid nodes the samples reach when D < n (_sece_factors)."""
    if weights is not None and stats.n <= SECE_DENSE_MAX:
        return _sece_dense(stats, weights, bandwidth)
    G = SECE_GRID
    half, ker = _sece_kernel(bandwidth)

    def smoothed(what: str) -> np.ndarray:  # (G, b); zero outside [0, 1]
        h = np.pad(grid_hist(stats, weights, G, what), ((0, 0), (half, half)))
        return np.ascontiguousarray(_fft_convolve_valid(h, ker).T)

    num, den = smoothed("correct"), smoothed("one")
    if weights is None:
        return _sece_point_gaps(stats, num[:, 0], den[:, 0])
    w = weighted(stats, weights)
    conf, Wt, total = stats.sample("conf"), w["Wt"], np.zeros(weights.shape[0])
    for start in range(0, conf.size, SECE_GAP_ROWS):  # cache-sized (samples, b) temporaries
        part = slice(start, start + SECE_GAP_ROWS)
        total += np.einsum("ij,ij->j", Wt[part], _sece_gaps(conf[part], num, den))
    return total / w["total"]
