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
from calbench.metrics.stats import SampleStats, cached

KDE_GRID = np.linspace(-0.6, 1.6, 2 ** 14)
KDE_STEP = KDE_GRID[1] - KDE_GRID[0]
KDE_FLOOR = 1e-6
ROWS_AT_ONCE = 16
ZERO_SPREAD = 1e-9


def _positions(r: np.ndarray):
    """Grid cell and linear-binning fraction of each point and of its mirror image."""
    pts = np.concatenate([r, np.where(r < 0.5, -r, 2.0 - r)])
    pos = (pts - KDE_GRID[0]) / KDE_STEP
    j = np.floor(pos).astype(np.int64).clip(0, KDE_GRID.size - 2)
    return j, pos - j


def _entries(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The four linear-binning entries of each sample (its point and its mirror image, each split
    onto cells j and j + 1): grid cell, share of the sample's count, sample index (each (4n,))."""
    j, frac = _positions(r)
    return np.concatenate([j, j + 1]), np.concatenate([1 - frac, frac]), np.tile(np.arange(r.size), 4)


HIST_ENTRIES = 1 << 20  # rows x entries per bincount of _histograms
SPARSE_SAMPLES = 1000  # from this many samples on, histograms by one sparse product (_histograms_sparse)


def _histograms(entries, c: np.ndarray, W: np.ndarray, base: int, width: int, size: int) -> np.ndarray:
    """(2, b, size): each count row's linear-binned histogram of all samples and of the correct
    ones on the grid cells base .. base + width - 1, zero-padded to `size` (entries outside the
    window are dropped: they lie farther than the kernel's reach from every grid point read)."""
    cells, share, sample = entries[:3]
    b = W.shape[0]
    out = None
    offsets = (np.arange(2 * b) * size)[:, None]
    step = max(1, HIST_ENTRIES // b)
    for start in range(0, cells.size, step):
        cl, sh, sm = cells[start:start + step], share[start:start + step], sample[start:start + step]
        keep = (cl >= base) & (cl < base + width)
        cl, sh, sm = cl[keep] - base, sh[keep], sm[keep]
        counts = W[:, sm] * sh
        part = np.bincount((cl[None, :] + offsets).ravel(), np.concatenate([counts, counts * c[sm]]).ravel(),
                           2 * b * size)
        out = part if out is None else out + part
    return out.reshape(2, b, size)


def _histograms_sparse(entries, c: np.ndarray, W: np.ndarray, base: int, width: int, size: int) -> np.ndarray:
    """_histograms by one sparse product: the (2 G', n) matrix of every entry's share (all samples
    over the correct ones) on the cells base0 .. (built once per sample set, entries[4]) times the
    counts' transpose. For many samples this reads each count once instead of gathering it for
    each of its four entries (50,000 samples: about 10x faster); for few, the bincount is cheaper
    than the product's full-height output (SPARSE_SAMPLES)."""
    matrix, base0, height = _entry_matrix(entries, c)
    b = W.shape[0]
    full = np.asarray(matrix @ np.ascontiguousarray(W.T)).reshape(2, height, b)
    lo, hi = max(base, base0), min(base + width, base0 + height)  # the window's cells that have entries
    out = np.zeros((2, b, size))
    if hi > lo:
        out[:, :, lo - base:hi - base] = full[:, lo - base0:hi - base0, :].transpose(0, 2, 1)
    return out


def _entry_matrix(entries, c: np.ndarray):
    """(matrix, first cell, cells): the CSR matrix of _histograms_sparse, cached in entries[4]."""
    memo = entries[4]
    if "matrix" not in memo:
        cells, share, sample = entries[:3]
        base0 = int(cells.min())
        height = int(cells.max()) - base0 + 1
        rows = np.concatenate([cells - base0, cells - base0 + height])
        values = np.concatenate([share, share * c[sample]])
        memo["matrix"] = (scipy.sparse.csr_matrix((values, (rows, np.concatenate([sample, sample]))),
                                                  shape=(2 * height, c.size)), base0, height)
    return memo["matrix"]


def _kernels(bw: np.ndarray, size: int | None = None) -> tuple[np.ndarray, int]:
    """(b, 2L + 1) triweight kernels with standard deviation bw, sampled at the grid step (rows),
    zero-padded to `size` columns if given."""
    support = 3.0 * bw
    L = _half_width(bw)
    u = np.arange(-L, L + 1) * KDE_STEP
    out = np.zeros((bw.size, size or 2 * L + 1))
    z = np.clip(1.0 - (u[None, :] / support[:, None]) ** 2, 0.0, None)
    out[:, :2 * L + 1] = 35.0 / 32.0 * z ** 3 / support[:, None]
    return out, L


def _half_width(bw: np.ndarray) -> int:
    """L: the kernels of _kernels are zero beyond L grid steps from their centre."""
    return int(np.floor(3.0 * bw.max() / KDE_STEP))


# The estimate reads the densities only on the grid points in [0, 1] (KDE_SEL); every point outside
# (0, 1) has density 0 and so never carries an integrand value into it.
KDE_SEL = np.flatnonzero((KDE_GRID >= 0) & (KDE_GRID <= 1))
KDE_INSIDE = ((KDE_GRID > 0) & (KDE_GRID < 1))[KDE_SEL]
KDE_LAST = int(KDE_SEL[-1])


def _smooth(x: np.ndarray, width: int, L: int, kernels: np.ndarray) -> np.ndarray:
    """Each row of x (2, b, size: grid cells g_a - L .. g_last + L, then zeros) convolved with its
    row's kernel (b, size; 'same' alignment), on the M = width - 2L grid points g_a .. g_last only.
    A circular convolution of size >= width leaves those points free of wrapped terms (the
    kernel reaches L cells)."""
    size = x.shape[-1]
    spec = scipy.fft.rfft(x.reshape(-1, size), axis=-1).reshape(*x.shape[:-1], -1)  # 2-d: pocketfft's
    spec *= scipy.fft.rfft(kernels, axis=-1)[None]                                  # fast batch loop
    return scipy.fft.irfft(spec.reshape(-1, spec.shape[-1]), size, axis=-1).reshape(x.shape)[..., 2 * L: width]


def _trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """w with y @ w = np.trapezoid(y, x)."""
    d = np.diff(x) / 2
    w = np.zeros(x.size)
    w[:-1] += d
    w[1:] += d
    return w


def _carry_forward(values: np.ndarray, valid: np.ndarray) -> None:
    """In place along each row: every invalid entry takes the value of the last valid one before it
    (0 before the first). The leading run (the kernel tail below the data) is zeroed by slicing;
    the few later runs (gaps in the data) take their values by runs of invalid entries."""
    rows, M = valid.shape
    first = np.argmax(valid, axis=1)
    first[~valid[np.arange(rows), first]] = M  # no valid entry at all
    gaps = ~valid
    for i, f in enumerate(first):
        values[i, :f] = 0.0
        gaps[i, :f] = False
    if not gaps.any():
        return
    rr, cc = np.nonzero(gaps)
    starts = np.ones(rr.size, dtype=bool)
    starts[1:] = (rr[1:] != rr[:-1]) | (cc[1:] != cc[:-1] + 1)
    carried = values[rr[starts], cc[starts] - 1]  # a valid entry: each gap starts after one
    values[rr, cc] = carried[np.cumsum(starts) - 1]


def kde_ece_from(s_all: np.ndarray, s_cor: np.ndarray, n: np.ndarray, n_c: np.ndarray, g_a: int) -> np.ndarray:
    """The estimate of the module docstring from the smoothed counts (b, M) of all samples and of
    the correct ones on the grid points g_a .. KDE_LAST (g_a >= KDE_SEL[0]; the density is exactly 0
    on the points of [0, 1] before g_a, which then add nothing to either integral and carry 0).
    Both arrays are overwritten (the densities and the integrand are computed in their buffers)."""
    x = KDE_GRID[g_a:KDE_LAST + 1]
    inside = KDE_INSIDE[g_a - KDE_SEL[0]:]
    p2, p1 = s_all, s_cor  # the densities, in the buffers of the smoothed counts
    p2 /= n[:, None]
    p1 /= np.maximum(n_c, 1e-300)[:, None]
    if not inside.all():
        p2[:, ~inside], p1[:, ~inside] = 0.0, 0.0
    valid = p1 > KDE_FLOOR
    valid |= p2 > KDE_FLOOR
    integrand = p1  # acc(x) = min(acc * p1 / p2, 1), then |x - acc(x)| p2, in p1's buffer
    integrand *= (n_c / n)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # p2 <= 0: fixed below
        integrand /= p2
        np.minimum(integrand, 1.0, out=integrand)
        np.subtract(x, integrand, out=integrand)
        np.abs(integrand, out=integrand)
        integrand *= p2
    nonpositive = p2 <= 0  # acc(x) = 1 there (rounding noise); invalid ones take carried values
    nonpositive &= valid
    if nonpositive.any():
        rows, cols = np.nonzero(nonpositive)
        integrand[rows, cols] = np.abs(x[cols] - 1.0) * p2[rows, cols]
    _carry_forward(integrand, valid)
    w = _trapezoid_weights(x)
    return (integrand @ w) / (p2 @ w)


def _moments(W: np.ndarray, r: np.ndarray, c: np.ndarray):
    """Per row: N, n_c, the bandwidth, and the spread of all r ((b,) arrays). Spreads in two passes
    (the mean, then the mean squared deviation, as np.std): exactly 0 for equal values whatever the
    summation order, so the fallback for a single confidence value never depends on rounding."""
    n, n_c = W.sum(axis=1), W @ c
    s_cor, s_all = _spread(W * c, n_c, r), _spread(W, n, r)
    s = np.where((n_c >= 2) & (s_cor > ZERO_SPREAD), s_cor, s_all)
    return n, n_c, s * (2.0 * n) ** -0.2, s_all


def _spread(weights: np.ndarray, total: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Weighted standard deviation of r for each row of weights, two-pass; the squared deviations
    are formed in place (one (b, n) temporary, not two)."""
    m = weights @ r / np.maximum(total, 1e-300)
    dev = np.subtract(r[None, :], m[:, None])
    np.multiply(dev, dev, out=dev)
    return np.sqrt(np.einsum("ij,ij->i", weights, dev) / np.maximum(total, 1e-300))


def _first_cell(entries, L: int) -> int:
    """The first grid point of [0, 1] whose density can be nonzero, less one (its value is then 0):
    L cells left of the lowest entry that reaches [0, 1] (a mirror image -r of a confidence more
    than L steps above 0 reaches none). One cell per run bounds every resample's."""
    ordered = entries[3]
    at = np.searchsorted(ordered, KDE_SEL[0] - L)
    lowest = ordered[at] if at < ordered.size else KDE_LAST
    return int(min(max(KDE_SEL[0], lowest - L - 1), KDE_LAST))


def _block(entries, c: np.ndarray, w: np.ndarray, n, n_c, bw: np.ndarray) -> np.ndarray:
    """KDE-ECE of the count rows w: histograms over the cells the read grid points need, one FFT
    convolution per row with its own kernel, the estimate (kde_ece_from)."""
    L = _half_width(bw)
    g_a = _first_cell(entries, L)
    width = KDE_LAST - g_a + 1 + 2 * L
    size = scipy.fft.next_fast_len(width, real=True)
    kernels, _ = _kernels(bw, size)
    histograms = _histograms_sparse if c.size >= SPARSE_SAMPLES else _histograms
    s_all, s_cor = _smooth(histograms(entries, c, w, g_a - L, width, size), width, L, kernels)
    return kde_ece_from(s_all, s_cor, n, n_c, g_a)


def kde_entries(r: np.ndarray):
    """_entries(r), its cells sorted and a memo for the sparse histogram matrix (what every count row
    of the same samples shares)."""
    cells, share, sample = _entries(r)
    return cells, share, sample, np.sort(cells), {}


def kde_ece_weighted(r: np.ndarray, c: np.ndarray, W: np.ndarray, entries=None) -> np.ndarray:
    """KDE-ECE of each row of the counts W (b, n) over the samples (r, c). Rows go through the FFT
    in blocks of similar bandwidth (a block's transforms are as long as its widest kernel needs)."""
    ent = entries if entries is not None else kde_entries(r)
    n, n_c, bw, s_all = _moments(W, r, c)
    point = s_all <= ZERO_SPREAD  # one confidence value: a point mass at it
    spare = bw[~point].min() if not point.all() else 0.01  # any kernel for them: not read
    bw = np.where(point, spare, bw)
    out = np.empty(W.shape[0])
    order = np.argsort(bw, kind="stable")
    for start in range(0, W.shape[0], ROWS_AT_ONCE):
        rows = order[start:start + ROWS_AT_ONCE]
        out[rows] = _block(ent, c, W[rows], n[rows], n_c[rows], bw[rows])
    return np.where(point, np.abs(W @ r / n - n_c / n), out)


@metric("kde-ece", name="KDE-based ECE", higher_is_better=False, percent=True, header="KDE-ECE",
        definition="top-label L1 ECE with triweight KDEs of r (Zhang et al. 2020, their bandwidth rule)",
        needs=("conf",), default=False, binning="kernel")
def kde_ece(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        r, c = np.concatenate([x[0] for x in stats.conf_chunks()]), np.concatenate([x[1] for x in stats.conf_chunks()])
        return float(kde_ece_weighted(r, c, np.ones((1, r.size)))[0])
    r, c = stats.sample("conf"), stats.sample("correct")
    return kde_ece_weighted(r, c, weights, cached(stats, "kde", lambda: kde_entries(r)))
