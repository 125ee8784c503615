"""SampleStats: what every metric reads, produced by ONE chunked pass over the (n, K) scores.

The pass validates each block (finite values; probabilities in [0, 1] summing to 1), takes the
row maximum and whether the label is the (first) argmax (argmax itself for wide rows; for
K <= NARROW an elementwise maximum over the columns, see row_top), and computes only what the
requested metrics need (their `needs`, see NEEDS): a float64 copy of a block is made only when a
metric needs every probability (logits always need one for the softmax normaliser; float32
probabilities with only confidence-based metrics need none), nll and brier are never computed
unless asked for. Per-bin sums and totals are accumulated block by block, so no (n, K) float64
array ever exists. Conventions: docs/metrics.md.

Point estimates read the accumulated sums and `key`, the confidence r_i and correctness c_i of each
sample packed into one uint64 ((bits of r) << 1 | c; r >= 0, so the integer order is the order by
(r, c)). A metric may reorder `key` in place (sorted_key sorts it once for every metric reading
it in order): point estimates depend only on the multiset of (r_i, c_i).
With keep_samples=True (the bootstrap) the pass also keeps aligned per-sample arrays in
`samples`, which the weighted (resampled) paths read.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field

import numpy as np

from calbench import native
from calbench.metrics.binning import bin_edges, bin_index
from calbench.metrics.inputs import Prepared, check_block

TINY = np.finfo(np.float64).tiny  # -log of a probability of exactly 0 is clipped to -log(tiny) ~ 708

# need -> what the pass produces for it
NEEDS = {
    "correct": "the number of correct predictions",
    "conf": "per-sample confidence and correctness (packed key)",
    "binned": "count, sum of c and sum of r per equal-width bin",
    "nll": "sum of -log p_{i,y_i}",
    "brier": "sum of sum_k (p_ik - 1[y_i = k])^2",
    "classwise": "per class and bin, sum of p_ik - 1[y_i = k] (classwise ECE)",
    "confusion": "the K x K confusion matrix (rows = label)",
    "probs": "the (n, K) float64 probabilities and the labels (class-wise equal-mass metrics)",
    "shots": "count, sum c, sum r per shot group of the label (many / medium / few) and equal-width bin",
}


@dataclass
class SampleStats:
    n: int
    num_classes: int
    bins: int
    key: np.ndarray | None = None
    totals: dict = field(default_factory=dict)
    binned: np.ndarray | None = None      # (3, M): count, sum c, sum r
    cece_sums: np.ndarray | None = None   # (K, M)
    confusion: np.ndarray | None = None   # (K, K) float64
    samples: dict | None = None           # aligned per-sample arrays (bootstrap only)
    probs: np.ndarray | None = None       # (n, K) float64, only for the "probs" need
    labels: np.ndarray | None = None      # (n,), only for the "probs" need
    shot_of_class: np.ndarray | None = None  # (K,) group 0/1/2 = many/medium/few (longtail.py)
    shot_binned: np.ndarray | None = None    # (3, 3, M): group, (count, sum c, sum r), bin
    cache: dict = field(default_factory=dict)

    def conf_chunks(self, step: int = 1 << 20):
        """(r, c) of the packed key in float64 chunks (c as 0.0 / 1.0)."""
        for start in range(0, self.n, step):
            k = self.key[start:start + step]
            yield (k >> np.uint64(1)).view(np.float64), (k & np.uint64(1)).astype(np.float64)

    def sample(self, name: str) -> np.ndarray:
        return self.samples[name]


def pack(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """uint64 key ordered like (r, c): the float64 bits of r >= 0 are monotone as integers."""
    return (conf.view(np.uint64) << np.uint64(1)) | correct.astype(np.uint64)


def unpack(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (key >> np.uint64(1)).view(np.float64), (key & np.uint64(1)).astype(np.float64)


def collect(prep: Prepared, bins: int, needs: frozenset, keep_samples: bool = False,
            check_values: bool = True, shot_of_class: np.ndarray | None = None) -> SampleStats:
    """Run the pass (module docstring); `check_values` validates every block on the way.
    `shot_of_class` ((K,) group per class, longtail.shot_groups) is required by the "shots" need."""
    n, k = prep.n, prep.num_classes
    st = SampleStats(n, k, bins)
    if "probs" in needs:
        st.probs, st.labels = np.empty((n, k)), prep.labels
    if "shots" in needs:
        st.shot_of_class, st.shot_binned = np.asarray(shot_of_class, dtype=np.int64), np.zeros((3, 3, bins))
    if "conf" in needs:
        st.key = np.empty(n, dtype=np.uint64)
    if "binned" in needs:
        st.binned = np.zeros((3, bins))
    if "classwise" in needs:
        st.cece_sums, st.cache["class_total"] = np.zeros(k * bins), np.zeros(k)
    if "confusion" in needs:
        st.confusion = np.zeros(k * k)
    for name in ("correct", "nll", "brier"):
        st.totals[name] = 0.0
    if keep_samples:
        st.samples = {"labels": prep.labels, "pred": np.empty(n, np.int64), "conf": np.empty(n),
                      "nll": np.empty(n), "brier": np.empty(n)}
        if "classwise" in needs or "probs" in needs:  # one (n, K) array serves both (no second copy)
            st.samples["probs"] = st.probs if st.probs is not None else np.empty((n, k))
    for start, stop in prep.chunks():
        _block(prep, st, needs, start, stop, check_values)
    _finish(st, needs)
    return st


NARROW = 16  # up to this many classes, row maxima are taken column by column (row_top)


def row_top(x: np.ndarray, with_sums: bool = False):
    """Row maxima of a (rows, K) block by K - 1 elementwise maxima over its column views: numpy's
    axis-1 reductions (max, argmax) pay a per-row cost that dominates rows of a few classes, while
    an elementwise maximum over a column is one vectorised loop. NaN propagates as in x.max(axis=1).
    with_sums: also the row sums of inputs.row_sums (same order), in the same loop over the columns."""
    top = x[:, 0].copy()
    sums = x[:, 0].astype(x.dtype if x.dtype.kind == "f" else np.float64) if with_sums else None
    for j in range(1, x.shape[1]):
        col = x[:, j]
        np.maximum(top, col, out=top)
        if with_sums:
            sums += col
    return top, sums


def label_scores(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x[i, y_i] for each row, by one take on the flattened block."""
    return np.take(x.reshape(-1), np.arange(len(y)) * x.shape[1] + y)


def first_max_is_label(x: np.ndarray, y: np.ndarray, top: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """c_i = 1[argmax_k x_ik = y_i] without an argmax, with numpy's tie rule (the FIRST maximal
    index): the label attains the row maximum; the few rows where another class attains it too
    (exact ties) are decided by argmax itself. For K <= NARROW (the count fits a uint8)."""
    correct = xy == top
    count = np.zeros(len(y), np.uint8)
    for j in range(x.shape[1]):
        count += x[:, j] == top
    tied = np.flatnonzero((count > 1) & correct)
    if tied.size:
        correct[tied] = x[tied].argmax(axis=1) == y[tied]
    return correct


def _top(x: np.ndarray, y: np.ndarray, need_pred: bool, with_sums: bool):
    """(pred or None, row maximum, x[i, y_i] or None, row sums or None) of a block: argmax for wide
    rows or when the predicted class itself is needed; column-wise maxima for narrow rows (row_top),
    which also take the row sums the probability check needs (with_sums)."""
    if need_pred or x.shape[1] > NARROW:
        pred = x.argmax(axis=1)
        return pred, label_scores(x, pred), None, None
    top, sums = row_top(x, with_sums)
    return None, top, label_scores(x, y), sums


def _softmax_parts(x, top, xy):
    """float64 exp(x - max) in place of a fresh copy, its row sums s, and x_y - max."""
    e = x.astype(np.float64)
    top64 = top.astype(np.float64)
    e -= top64[:, None]
    zy = xy.astype(np.float64) - top64
    np.exp(e, out=e)
    return e, e.sum(axis=1), zy


def _block(prep: Prepared, st: SampleStats, needs, start: int, stop: int, check_values: bool) -> None:
    x, y = prep.scores[start:stop], prep.labels[start:stop]
    keep = st.samples is not None
    check_sums = check_values and prep.kind == "probs"
    pred, top, xy, sums = _top(x, y, keep or st.confusion is not None, check_sums)
    if check_values:
        check_block(prep.kind, x, top, start, sums)
    want_nll = "nll" in needs or keep
    if xy is None and (want_nll or prep.kind == "logits"):
        xy = label_scores(x, y)
    full = bool(needs & {"brier", "classwise", "probs"}) or keep  # every probability in float64
    p = nll = None
    if prep.kind == "logits":
        p, s, zy = _softmax_parts(x, top, xy)
        conf = 1.0 / s
        nll = np.log(s) - zy if want_nll else None
        if full:
            p /= s[:, None]
    else:
        conf = top.astype(np.float64)
        nll = -np.log(np.maximum(xy.astype(np.float64), TINY)) if want_nll else None
        if full:
            p = np.array(x, dtype=np.float64)
    correct = pred == y if pred is not None else first_max_is_label(x, y, top, xy)
    _accumulate(st, needs, start, stop, y, pred, conf, correct, nll, p if full else None)


def _accumulate(st, needs, start, stop, y, pred, conf, correct, nll, p) -> None:
    M, k = st.bins, st.num_classes
    st.totals["correct"] += float(np.count_nonzero(correct))
    if st.key is not None:
        st.key[start:stop] = pack(conf, correct)
    b = bin_index(conf, M) if st.binned is not None or st.shot_binned is not None else None
    if st.binned is not None:  # one count per (bin, c) cell gives the count and sum c of each bin
        cells = np.bincount(2 * b + correct, minlength=2 * M).reshape(M, 2)
        st.binned[0] += cells[:, 0] + cells[:, 1]
        st.binned[1] += cells[:, 1]
        st.binned[2] += np.bincount(b, weights=conf, minlength=M)
    if nll is not None:
        st.totals["nll"] += float(nll.sum())
    if st.confusion is not None:
        st.confusion += np.bincount(y * k + pred, minlength=k * k)
    if st.shot_binned is not None:
        cell = st.shot_of_class[y] * M + b
        for j, v in enumerate((None, correct.astype(np.float64), conf)):
            st.shot_binned[:, j] += np.bincount(cell, weights=v, minlength=3 * M).reshape(3, M)
    if p is not None:
        _classwise_and_brier(st, needs, start, stop, y, p)
    if st.samples is not None:
        s = st.samples
        s["pred"][start:stop], s["conf"][start:stop], s["nll"][start:stop] = pred, conf, nll


def _classwise_and_brier(st, needs, start, stop, y, p) -> None:
    """p is the block's float64 probabilities; it is turned into p - onehot(y) here. Classwise
    sums: only the entries above the first bin need a bin index; their flat positions index the
    values and a periodic table of class cells (no integer division of positions, no boolean
    gathers, which are slow when many entries qualify). The C walk of pass_blocks.c sums every bin
    (the first one directly) and the Brier score in one pass over the entries when it is built."""
    M, k = st.bins, st.num_classes
    if st.samples is not None and "probs" in st.samples:
        st.samples["probs"][start:stop] = p
    if st.probs is not None and (st.samples is None or st.samples.get("probs") is not st.probs):
        st.probs[start:stop] = p
    if _classwise_kernel(st, y, p, start, stop):
        return
    at_label = np.arange(stop - start) * k + y  # flat position of p[i, y_i]
    flat = p.reshape(-1)
    if st.cece_sums is not None:
        above = np.flatnonzero(flat > bin_edges(M)[1])
        cells = np.take(_class_cells(st, flat.size), above) + bin_index(np.take(flat, above), M)
    flat[at_label] = flat[at_label] - 1.0
    brier = np.einsum("ij,ij->i", p, p)
    st.totals["brier"] += float(brier.sum())
    if st.samples is not None:
        st.samples["brier"][start:stop] = brier
    if st.cece_sums is not None:
        st.cece_sums += np.bincount(cells, weights=np.take(flat, above), minlength=k * M)
        st.cache["class_total"] += column_sums(p)


@functools.cache
def _pass_kernel():
    lib = native.load("pass_blocks", package="metrics")
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.calbench_classwise_block.argtypes = [i64, i64, i64, p, p, p, p, p]
        lib.calbench_classwise_block.restype = None
    return lib


def _classwise_kernel(st: SampleStats, y: np.ndarray, p: np.ndarray, start: int, stop: int) -> bool:
    """_classwise_and_brier's sums by the C walk (pass_blocks.c); False where it is not built."""
    lib = _pass_kernel()
    if lib is None:
        return False
    p = np.ascontiguousarray(p, dtype=np.float64)  # every block or none: _finish reads one flag
    rows, k, M = p.shape[0], st.num_classes, st.bins
    y = np.ascontiguousarray(y, dtype=np.int64)
    edges, brier = bin_edges(M), np.empty(rows)
    cls = st.cece_sums is not None
    if cls:  # every bin summed directly, the first one included (_finish leaves it as it is)
        st.cache["first_bin_summed"] = True
    lib.calbench_classwise_block(rows, k, M, edges.ctypes.data, p.ctypes.data, y.ctypes.data,
                                 st.cece_sums.ctypes.data if cls else None, brier.ctypes.data)
    st.totals["brier"] += float(brier.sum())
    if st.samples is not None:
        st.samples["brier"][start:stop] = brier
    return True


def _class_cells(st: SampleStats, size: int) -> np.ndarray:
    """k * M at every flat position of class k in a row-major block of `size` entries (cached; a
    longer table serves a shorter block, the pattern repeats every row)."""
    table = st.cache.get("class_cells")
    if table is None or table.size < size:
        k = st.num_classes
        table = np.tile(np.arange(k) * st.bins, -(-size // k))
        st.cache["class_cells"] = table
    return table


def column_sums(p: np.ndarray) -> np.ndarray:
    """p.sum(axis=0); for few classes one reduction per column view (numpy's axis-0 reduction of a
    narrow C-order array steps row by row)."""
    if p.shape[1] > NARROW:
        return p.sum(axis=0)
    return np.array([p[:, j].sum() for j in range(p.shape[1])])


def _finish(st: SampleStats, needs) -> None:
    if st.cece_sums is not None:  # the first bin's sum is the class total minus the other bins
        sums = st.cece_sums.reshape(st.num_classes, st.bins)
        class_total = st.cache.pop("class_total")
        if not st.cache.pop("first_bin_summed", False):  # the C walk summed it directly
            sums[:, 0] = class_total - sums[:, 1:].sum(axis=1)
        st.cache.pop("class_cells", None)
        st.cece_sums = sums
    if st.confusion is not None:
        st.confusion = st.confusion.reshape(st.num_classes, st.num_classes)
    if st.samples is not None:
        s = st.samples
        s["correct"] = (s["pred"] == s["labels"]).astype(np.float64)


def sorted_key(stats: SampleStats) -> np.ndarray:
    """stats.key sorted in place (the order by (r, then c)), once for every metric of the call that
    reads the confidences in order (aece, ks, the risk-coverage metrics, the sweep): no copy, no re-sort.
    Point estimates depend only on the multiset of (r_i, c_i), so reordering the key is safe."""
    if not stats.cache.get("key_sorted"):
        stats.key.sort()
        stats.cache["key_sorted"] = True
    return stats.key


class _WeightsMemo(dict):
    """weighted()'s dict: "total" at once, "Wt" built on first use (the C paths never read it)."""

    def __init__(self, W: np.ndarray):
        super().__init__(total=W.sum(axis=1))
        self._W = W

    def __missing__(self, key):
        if key != "Wt":
            raise KeyError(key)
        self["Wt"] = value = np.ascontiguousarray(self._W.T)
        return value


def weighted(stats: SampleStats, W: np.ndarray) -> dict:
    """Per-weights scratch shared by the metrics of one bootstrap block: the transposed counts
    "Wt" (n, b) in C order (sparse @ dense wants it; made when first read) and the resample sizes
    "total" (b,). Kept for the latest W only (the reference to W itself is held, so identity is a
    safe test)."""
    memo = stats.cache.get("weights")
    if memo is None or memo[0] is not W:
        memo = (W, _WeightsMemo(W))
        stats.cache["weights"] = memo
    return memo[1]


def cached(stats: SampleStats, name: str, build):
    """stats.cache[name], built once by build() (structures every bootstrap block reuses)."""
    if name not in stats.cache:
        stats.cache[name] = build()
    return stats.cache[name]


def sorted_samples(stats: SampleStats) -> bool:
    """Whether stats.samples are in the adaptive order (by r, then c); the bootstrap sorts them."""
    return bool(stats.cache.get("sorted"))
