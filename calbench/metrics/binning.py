"""Equal-width bin assignment with the (lo, hi] convention of docs/metrics.md (r = 0 joins bin 1)."""

from __future__ import annotations

import numpy as np


def bin_edges(bins: int) -> np.ndarray:
    """The M + 1 edges 0, 1/M, ..., 1 as float64 (np.linspace, so b/M is the float edge)."""
    return np.linspace(0.0, 1.0, bins + 1)


def bin_index(x: np.ndarray, bins: int) -> np.ndarray:
    """0-based bin of each value: bin b holds (edges[b], edges[b+1]]; 0 joins bin 0, 1.0 the last.

    A value exactly on an edge goes to the bin below it (the edge is that bin's closed upper end).
    Computed as ceil(x * M) - 1 and corrected by one step against the float edges, so that it agrees
    with np.searchsorted(edges, x, 'left') - 1 without its O(log M) passes.
    """
    edges = bin_edges(bins)
    x = np.asarray(x, dtype=np.float64)
    idx = np.ceil(x * bins).astype(np.int64) - 1
    np.clip(idx, 0, bins - 1, out=idx)
    idx -= (x <= edges[idx]) & (idx > 0)
    idx += (x > edges[idx + 1]) & (idx < bins - 1)
    return idx


def equal_mass_groups(n: int, bins: int) -> np.ndarray:
    """Group boundaries (M + 1 cumulative positions) splitting n sorted samples into M contiguous
    groups whose sizes differ by at most one (the first n % M groups are one larger)."""
    sizes = np.full(bins, n // bins, dtype=np.int64)
    sizes[: n % bins] += 1
    return np.concatenate([[0], np.cumsum(sizes)])
