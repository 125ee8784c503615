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

import functools

import numpy as np
import scipy.fft
import scipy.sparse

from calbench.metrics.registry import metric
from calbench.metrics.stats import SampleStats, cached

KDE_GRID = np.linspace(-0.6, 1.6, 2 ** 14)
KDE_STEP = KDE_GRID[1] - KDE_GRID[0]
KDE_FLOOR = 1e-6
ROWS_AT_ONCE = 16
PASS_ELEMENTS = 1 << 24  # rows x 10 n of one pass of kde_ece_weighted (its temporaries: ~10 b n)
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


# The estimate reads the densities only on the grid points in [0, 1] (KDE_SEL); every point outside
# (0, 1) has density 0 and so never carries an integrand value into it.
KDE_SEL = np.flatnonzero((KDE_GRID >= 0) & (KDE_GRID <= 1))
KDE_INSIDE = ((KDE_GRID > 0) & (KDE_GRID < 1))[KDE_SEL]
KDE_LAST = int(KDE_SEL[-1])


def _window_counts(entries, c: np.ndarray, W: np.ndarray, base: int, top: int):
    """(cells, counts): the occupied grid cells in base .. top - 1 (sorted) and (b, C, 2) each count
    row's linear-binned histogram of all samples and of the correct ones on them. One sparse product
    (_entry_matrix's rows of those cells) times the counts' transpose, for all rows at once: each
    count is read once per entry, and the product is only as tall as the occupied cells."""
    matrix, cells = _entry_matrix(entries, c)
    lo, hi = (int(i) for i in np.searchsorted(cells, [base, top]))
    counts = np.asarray(matrix[2 * lo:2 * hi] @ np.ascontiguousarray(W.T))  # (2C, b)
    return cells[lo:hi], np.ascontiguousarray(counts.T).reshape(W.shape[0], hi - lo, 2)


def _histograms(cells: np.ndarray, counts: np.ndarray, base: int, width: int, out: np.ndarray) -> np.ndarray:
    """out (2, b, size), filled with the histograms (counts: _window_counts' rows of the block) on
    the grid cells base .. base + width - 1, zero-padded to `size` (cells outside the window are
    dropped: they lie farther than the kernel's reach from every grid point read)."""
    lo, hi = np.searchsorted(cells, [base, base + width])
    out.fill(0.0)
    columns = cells[lo:hi] - base
    out[0][:, columns] = counts[:, lo:hi, 0]
    out[1][:, columns] = counts[:, lo:hi, 1]
    return out


def _entry_matrix(entries, c: np.ndarray):
    """(matrix, cells): the CSR matrix (2C, n) of every entry's share on the C distinct cells (row
    2k: all samples on cell k, row 2k + 1: the correct ones) and the sorted distinct cells, built
    once per sample set (cached in entries[4])."""
    memo = entries[4]
    if "matrix" not in memo:
        cells, share, sample = entries[:3]
        distinct, row = np.unique(cells, return_inverse=True)
        rows = np.concatenate([2 * row, 2 * row + 1])
        values = np.concatenate([share, share * c[sample]])
        memo["matrix"] = (scipy.sparse.csr_matrix((values, (rows, np.concatenate([sample, sample]))),
                                                  shape=(2 * distinct.size, c.size)), distinct)
    return memo["matrix"]


# The sampled triweight kernel of standard deviation bw (KDEpy's: support s = 3 bw) at offset k
# grid steps, |k| <= L = floor(s / step), is K(k) = 35 / (32 s) (1 - a k^2)^3 with a = (step / s)^2,
# i.e. the even polynomial 35 / (32 s) sum_q COEF_q a^q k^(2q) (q = 0..3, COEF = 1, -3, 3, -1).
# Centred at index 0 of a circular array of length N, its DFT is real:
#   K^(j) = 35 / (32 s) sum_q COEF_q a^q T_q(j; L),  T_q(j; L) = sum_{|k| <= L} k^(2q) cos(2 pi j k / N),
# so the rows need the four power sums T_q at their L only: one real FFT each (_power_sums) at the
# first L of a transform length, then T_q(L) = T_q(L - 1) + 2 L^(2q) cos(2 pi j L / N) for each
# larger L, carried from block to block (the rows come in increasing bandwidth): a handful of
# transforms per call instead of one per row, and a real spectrum (real x complex products).
KERNEL_COEF = np.array([1.0, -3.0, 3.0, -1.0])
KERNEL_POWERS = 2 * np.arange(4)


def _half_widths(bw: np.ndarray) -> np.ndarray:
    """L per row: the kernels are zero beyond L grid steps from their centre."""
    return np.floor(3.0 * bw / KDE_STEP).astype(np.int64)


def _half_width(bw: np.ndarray) -> int:
    """The largest L of the rows."""
    return int(_half_widths(bw).max())


def _power_sums(L: int, size: int) -> np.ndarray:
    """(4, size // 2 + 1): T_q(j; L) of the comment above, by one real FFT of the circular arrays
    k^(2q), |k| <= L (even, so their DFTs are real: the imaginary rounding is dropped)."""
    k = np.arange(L + 1, dtype=float)
    powers = k[None, :] ** KERNEL_POWERS[:, None]
    arrays = np.zeros((4, size))
    arrays[:, :L + 1] = powers
    if L:
        arrays[:, size - L:] = powers[:, :0:-1]
    return scipy.fft.rfft(arrays, axis=-1).real


def _kernel_spectra(bw: np.ndarray, size: int, state: list) -> np.ndarray:
    """(b, size // 2 + 1): the real DFT of each row's kernel centred at index 0 (comment above):
    for each distinct L of the rows in increasing order (power sums: _sums_at), its rows' four
    weights times the four power sums, written in place when the rows come sorted (as blocks do)."""
    support = 3.0 * bw
    a = (KDE_STEP / support) ** 2
    weights = (35.0 / 32.0 / support)[:, None] * KERNEL_COEF * a[:, None] ** np.arange(4)  # (b, 4)
    half = _half_widths(bw)
    order = np.argsort(half, kind="stable")
    levels, starts = np.unique(half[order], return_index=True)
    ends = np.append(starts[1:], bw.size)
    out = np.empty((bw.size, size // 2 + 1))
    for L, start, end in zip(levels.tolist(), starts.tolist(), ends.tolist()):
        _small_product(weights[order[start:end]], _sums_at(L, size, state), out[start:end])
    if np.any(order != np.arange(bw.size)):
        out[order] = out.copy()
    return out


PRODUCT_SIZE = 200_000  # m n k of a matrix product OpenBLAS keeps on the calling thread (<= 4 * 65536)


def _small_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b in column blocks small enough for OpenBLAS to run each on this thread: a
    threaded product leaves its idle threads spinning for a while after it and doubles the CPU."""
    step = max(1, PRODUCT_SIZE // (a.shape[0] * a.shape[1]))
    for start in range(0, b.shape[1], step):
        np.matmul(a, b[:, start:start + step], out=out[:, start:start + step])
    return out


def _sums_at(target: int, size: int, state: list) -> np.ndarray:
    """T_q(j; target) for transforms of length size. state = [size, L, T_q(j; L)] carries the power
    sums from block to block (the rows come in increasing bandwidth, the blocks mostly share
    lengths): increments from its L when target lies at most INCREMENTS_AT_MOST above it, else
    _power_sums anew. Updated in place; the returned array changes with the next call."""
    if state[0] != size or not 0 <= target - state[1] <= INCREMENTS_AT_MOST:
        state[:] = [size, target, _power_sums(target, size)]
    while state[1] < target:
        state[1] += 1
        state[2] += _power_increment(state[1], size)
    return state[2]


INCREMENTS_AT_MOST = 4  # an increment costs about a quarter of _power_sums' four transforms


def _power_increment(L: int, size: int) -> np.ndarray:
    """(4, size // 2 + 1): T_q(j; L) - T_q(j; L - 1) = 2 L^(2q) cos(2 pi j L / N), the cosines
    looked up at (j L mod N) in a table of cos(2 pi t / N)."""
    table, freq = _cosines(size)
    return (2.0 * float(L) ** KERNEL_POWERS)[:, None] * table[freq * L % size]


@functools.lru_cache(maxsize=64)
def _cosines(size: int) -> tuple[np.ndarray, np.ndarray]:
    """cos(2 pi t / size) for t = 0 .. size - 1 (one table per transform length) and the
    frequencies 0 .. size // 2."""
    return np.cos((2 * np.pi / size) * np.arange(size)), np.arange(size // 2 + 1)


def _smooth(x: np.ndarray, spectra: np.ndarray, L: int, width: int, buffers: dict) -> np.ndarray:
    """Each row of x (2, b, size: grid cells g_a - L .. g_last + L, then zeros) convolved with its
    row's kernel (spectra: _kernel_spectra), on the M = width - 2L grid points g_a .. g_last only
    (indices L .. width - L - 1: the kernel is centred at index 0). A circular convolution of size
    >= width leaves those points free of wrapped terms (the kernel reaches L cells). The
    transforms write into buffers kept across blocks (x's buffer takes the result): fresh
    megabyte-sized outputs cost page faults comparable to the transforms themselves."""
    size = x.shape[-1]
    rows = x.reshape(-1, size)
    spec = _buffer(buffers, "spectrum", (rows.shape[0], size // 2 + 1), np.complex128)
    np.fft.rfft(rows, axis=-1, out=spec)  # 2-d: pocketfft's batch loop
    spec.reshape(2, *spectra.shape)[...] *= spectra
    np.fft.irfft(spec, size, axis=-1, out=rows)
    return x[..., L:width - L]


def _buffer(buffers: dict, name: str, shape: tuple, dtype) -> np.ndarray:
    """A C-contiguous array of `shape` over buffers[name], reallocated only when it is too small."""
    need = int(np.prod(shape))
    if name not in buffers or buffers[name].size < need:
        buffers[name] = np.empty(need, dtype)
    return buffers[name][:need].reshape(shape)


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
    rr, cc = np.divmod(np.flatnonzero(gaps), M)  # 10x faster than a 2-d np.nonzero
    starts = np.ones(rr.size, dtype=bool)
    starts[1:] = (rr[1:] != rr[:-1]) | (cc[1:] != cc[:-1] + 1)
    carried = values[rr[starts], cc[starts] - 1]  # a valid entry: each gap starts after one
    values[rr, cc] = carried[np.cumsum(starts) - 1]


def kde_ece_from(s_all: np.ndarray, s_cor: np.ndarray, n: np.ndarray, n_c: np.ndarray, g_a: int) -> np.ndarray:
    """The estimate of the module docstring from the smoothed counts (b, M) of all samples and of
    the correct ones on the grid points g_a .. KDE_LAST (g_a >= KDE_SEL[0]; the density is exactly 0
    on the points of [0, 1] before g_a, which then add nothing to either integral and carry 0).
    With p2 = s_all / N and p1 = s_cor / n_c, acc p1 / p2 = s_cor / s_all; every integrand value
    carries p2's factor 1 / N, which cancels in the ratio of the two integrals, and for s_all > 0
    |x - min(s_cor / s_all, 1)| s_all = |x s_all - min(s_cor, s_all)| (no division):
      KDE-ECE = trapz(|x s_all - min(s_cor, s_all)|) / trapz(s_all),
    the floor compared on the counts' scale (p1 > 1e-6 iff s_cor > 1e-6 n_c); s_all <= 0 at a valid
    point: _nonpositive_tails. Both arrays are overwritten (the integrand lands in s_all's)."""
    x = KDE_GRID[g_a:KDE_LAST + 1]
    inside = KDE_INSIDE[g_a - KDE_SEL[0]:]
    if not inside.all():
        s_all[:, ~inside], s_cor[:, ~inside] = 0.0, 0.0
    valid = s_all > (KDE_FLOOR * n)[:, None]
    high_cor = s_cor > (KDE_FLOOR * n_c)[:, None]
    tails = _nonpositive_tails(s_all, high_cor, x)
    valid |= high_cor
    w = _trapezoid_weights(x)
    total = s_all @ w
    np.minimum(s_cor, s_all, out=s_cor)
    integrand = np.multiply(s_all, x, out=s_all)
    integrand -= s_cor
    np.abs(integrand, out=integrand)
    if tails is not None:
        integrand[tails[0], tails[1]] = tails[2]
    _carry_forward(integrand, valid)
    return (integrand @ w) / total


def _nonpositive_tails(s_all: np.ndarray, high_cor: np.ndarray, x: np.ndarray):
    """(rows, cols, values) where a point is valid by its correct samples' density (high_cor) but
    the count of all samples is <= 0 there (rounding noise of a far tail): the authors' loop takes
    acc(x) = 1, the integrand |x - 1| s_all. None if there is no such point."""
    nonpositive = s_all <= 0
    nonpositive &= high_cor
    if not nonpositive.any():
        return None
    rows, cols = np.divmod(np.flatnonzero(nonpositive), s_all.shape[1])
    return rows, cols, np.abs(x[cols] - 1.0) * s_all[rows, cols]


def _moments(W: np.ndarray, r: np.ndarray, c: np.ndarray):
    """Per row: N, n_c, the bandwidth, and the spread of all r ((b,) arrays), from one product of W
    with the columns [1, c, d, c d, d^2, c d^2], d = r - K for K the plain mean of r: a row's spread
    is sqrt(sum w d^2 / N - (sum w d / N)^2), whose cancellation is that of (mean_w r - K)^2 against
    the variance (a resample's mean lies within a few standard errors of K: nothing is lost). Rows
    whose spread comes out below SPREAD_RECHECK are recomputed in two passes (_spread): exactly 0
    for equal values whatever the summation order, so the fallback for a single confidence value
    never depends on rounding."""
    d = r - (r.mean() if r.size else 0.0)
    columns = np.stack([np.ones_like(r), c, d, c * d, d * d, c * d * d], axis=1)
    sums = np.einsum("ij,jk->ik", W, columns)  # not BLAS: its threads would spin on after the product
    n, n_c = sums[:, 0], sums[:, 1]
    s_all, s_cor = _one_pass(n, sums[:, 2], sums[:, 4]), _one_pass(n_c, sums[:, 3], sums[:, 5])
    for spread, weights, total in ((s_all, W, n), (s_cor, W * c, n_c)):
        low = np.flatnonzero(spread < SPREAD_RECHECK)
        if low.size:
            spread[low] = _spread(weights[low], total[low], r)
    s = np.where((n_c >= 2) & (s_cor > ZERO_SPREAD), s_cor, s_all)
    return n, n_c, s * (2.0 * n) ** -0.2, s_all


SPREAD_RECHECK = 1e-6  # far above the one-pass form's rounding (~1e-8 for r in [0, 1]) and ZERO_SPREAD


def _one_pass(total: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """sqrt(second / total - (first / total)^2), 0 for a zero total (first and second are 0 then)."""
    total = np.maximum(total, 1e-300)
    return np.sqrt(np.maximum(second / total - (first / total) ** 2, 0.0))


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


def _block(entries, window: tuple, n, n_c, bw: np.ndarray, buffers: dict) -> np.ndarray:
    """KDE-ECE of a block of count rows (window: _window_counts' cells and the block's rows of its
    counts): histograms over the cells the read grid points need, one FFT convolution per row with
    its own kernel, the estimate (kde_ece_from)."""
    L = _half_width(bw)
    g_a = _first_cell(entries, L)
    width = KDE_LAST - g_a + 1 + 2 * L
    size = scipy.fft.next_fast_len(width, real=True)
    grid = _buffer(buffers, "grid", (2, bw.size, size), np.float64)
    hist = _histograms(*window, g_a - L, width, grid)
    spectra = _kernel_spectra(bw, size, buffers.setdefault("power sums", [0, 0, None]))
    s_all, s_cor = _smooth(hist, spectra, L, width, buffers)
    return kde_ece_from(s_all, s_cor, n, n_c, g_a)


def kde_entries(r: np.ndarray):
    """_entries(r), its cells sorted and a memo for the sparse histogram matrix (what every count row
    of the same samples shares)."""
    cells, share, sample = _entries(r)
    return cells, share, sample, np.sort(cells), {}


def kde_ece_weighted(r: np.ndarray, c: np.ndarray, W: np.ndarray, entries=None) -> np.ndarray:
    """KDE-ECE of each row of the counts W (b, n) over the samples (r, c). Rows go through the FFT
    in blocks of similar bandwidth (a block's transforms are as long as its widest kernel needs);
    the histograms of all rows come from one product over the cells any block reads."""
    ent = entries if entries is not None else kde_entries(r)
    rows_per_pass = max(ROWS_AT_ONCE, PASS_ELEMENTS // max(10 * r.size, 1))
    if W.shape[0] > rows_per_pass:  # bounded temporaries: W's transpose and counts (b, C <= 4n, 2)
        return np.concatenate([kde_ece_weighted(r, c, W[i:i + rows_per_pass], ent)
                               for i in range(0, W.shape[0], rows_per_pass)])
    n, n_c, bw, s_all = _moments(W, r, c)
    point = s_all <= ZERO_SPREAD  # one confidence value: a point mass at it
    spare = bw[~point].min() if not point.all() else 0.01  # any kernel for them: not read
    bw = np.where(point, spare, bw)
    L = _half_width(bw)
    cells, counts = _window_counts(ent, c, W, _first_cell(ent, L) - L, KDE_LAST + L + 1)
    out = np.empty(W.shape[0])
    order = np.argsort(bw, kind="stable")
    buffers = {}
    for start in range(0, W.shape[0], ROWS_AT_ONCE):
        rows = order[start:start + ROWS_AT_ONCE]
        out[rows] = _block(ent, (cells, counts[rows]), n[rows], n_c[rows], bw[rows], buffers)
    if point.any():
        out[point] = np.abs(W[point] @ r / n[point] - n_c[point] / n[point])
    return out


@metric("kde-ece", name="KDE-based ECE", higher_is_better=False, percent=True, header="KDE-ECE",
        definition="top-label L1 ECE with triweight KDEs of r (Zhang et al. 2020, their bandwidth rule)",
        needs=("conf",), default=False, binning="kernel")
def kde_ece(stats: SampleStats, weights: np.ndarray | None):
    if weights is None:
        r, c = np.concatenate([x[0] for x in stats.conf_chunks()]), np.concatenate([x[1] for x in stats.conf_chunks()])
        return float(kde_ece_weighted(r, c, np.ones((1, r.size)))[0])
    r, c = stats.sample("conf"), stats.sample("correct")
    return kde_ece_weighted(r, c, weights, cached(stats, "kde", lambda: kde_entries(r)))
