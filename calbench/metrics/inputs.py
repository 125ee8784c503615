"""Validation and normalisation of metric inputs: numpy or torch, logits or probs, segmentation maps.

Every problem raises calbench.errors.InputError with a one-line message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calbench.errors import InputError

PROB_SUM_TOL = 1e-4  # |sum_k p_ik - 1| allowed, relative to 1
CHUNK_ELEMENTS = 1 << 19  # rows x classes per block of the pass (4 MiB in float64: near the L2 cache)


def as_numpy(x, name: str) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (any device, bf16 included) or nested list."""
    if x is None:
        raise InputError(f"{name} is missing")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise InputError(f"{name} is not an array: {err}") from None


@dataclass(frozen=True)
class Prepared:
    """Validated inputs as rows: labels (n,) int64 and scores (n, K) (a view when possible)."""

    labels: np.ndarray
    scores: np.ndarray
    kind: str  # "logits" | "probs"
    segmentation: bool

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])

    def chunks(self):
        """Row ranges (start, stop) of about CHUNK_ELEMENTS elements each."""
        step = max(1, CHUNK_ELEMENTS // max(1, self.num_classes))
        for start in range(0, self.n, step):
            yield start, min(self.n, start + step)


def prepare(labels, logits=None, probs=None, ignore_index: int | None = None, check_values: bool = True) -> Prepared:
    """Check shapes, dtypes, label range and, with check_values, finiteness and (for probs) row sums;
    flatten segmentation (N, K, H, W) / (N, H, W) to pixel rows and drop rows whose label is
    ignore_index. compute_metrics passes check_values=False and checks each block in its one pass
    (stats.collect) with the same check_block."""
    if (logits is None) == (probs is None):
        raise InputError("give exactly one of logits= or probs=")
    kind = "logits" if logits is not None else "probs"
    scores = as_numpy(logits if logits is not None else probs, kind)
    labels = as_numpy(labels, "labels")
    if scores.dtype.kind not in "fiu":
        raise InputError(f"{kind} must be numeric, got dtype {scores.dtype}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and labels.size and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    segmentation = scores.ndim == 4
    if scores.ndim == 4:
        if labels.ndim != 3 or labels.shape != (scores.shape[0],) + scores.shape[2:]:
            raise InputError(f"shape mismatch: {kind} {tuple(scores.shape)} (N, K, H, W) needs labels (N, H, W), "
                             f"got labels {tuple(labels.shape)}")
        scores = np.moveaxis(scores, 1, -1).reshape(-1, scores.shape[1])
        labels = labels.reshape(-1)
    elif scores.ndim == 2:
        if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
            raise InputError(f"shape mismatch: {kind} {tuple(scores.shape)} needs labels ({scores.shape[0]},), "
                             f"got labels {tuple(labels.shape)}")
    else:
        raise InputError(f"{kind} must have shape (N, K) or (N, K, H, W), got {tuple(scores.shape)}")
    labels = labels.astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = labels != ignore_index
        if not keep.all():
            labels, scores = labels[keep], scores[keep]
    n, k = scores.shape
    if n == 0:
        raise InputError("no samples (after dropping ignore_index)" if ignore_index is not None else "no samples")
    if k < 2:
        raise InputError(f"{kind} needs at least 2 classes, got {k}")
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        i = int(np.argmax(bad))
        hint = "; pass ignore_index (--ignore-index) for void pixels" if segmentation and ignore_index is None else ""
        raise InputError(f"labels out of range: label {int(labels[i])} at row {i}, expected 0..{k - 1}{hint}")
    prep = Prepared(labels, scores, kind, segmentation)
    if check_values:
        for start, stop in prep.chunks():
            block = scores[start:stop]
            check_block(kind, block, block.max(axis=1), start)
    return prep


def check_block(kind: str, block: np.ndarray, top: np.ndarray, start: int, sums: np.ndarray | None = None) -> None:
    """InputError for a non-finite value or (probs) a value outside [0, 1] or a row not summing to 1.

    Fast path: `top` is the row maximum (NaN where the row holds a NaN, as argmax / max propagate
    it), so the block is finite iff top and the block's flat minimum are; the probability range
    needs the flat minimum and max(top); the row sums are taken in the block's dtype and only rows
    near or past the tolerance are re-checked in float64 by the exact rule. `sums`: the row sums
    (row_sums) when the caller already took them in its own loop over the columns.
    """
    lo = block.min() if block.dtype.kind == "f" or kind == "probs" else 0
    if block.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(top).all()):
        finite = np.isfinite(block)
        row = start + int(np.argmax(~finite.all(axis=1)))
        raise InputError(f"{kind} contain NaN or inf (first at row {row})")
    if kind != "probs":
        return
    if float(lo) < -PROB_SUM_TOL or float(top.max()) > 1 + PROB_SUM_TOL:
        _check_probs(np.asarray(block, dtype=np.float64), start)
    sums = row_sums(block) if sums is None else sums
    if (np.abs(sums - 1.0) > PROB_SUM_TOL / 2).any():
        _check_probs(np.asarray(block, dtype=np.float64), start)


def row_sums(block: np.ndarray) -> np.ndarray:
    """Row sums in the block's float dtype; for few classes a loop over columns (numpy's axis-1
    reduction pays a per-row cost that dominates short rows)."""
    dtype = block.dtype if block.dtype.kind == "f" else np.float64
    if block.shape[1] > 16:
        return block.sum(axis=1, dtype=dtype)
    sums = block[:, 0].astype(dtype)
    for j in range(1, block.shape[1]):
        sums += block[:, j]
    return sums


def _check_probs(block: np.ndarray, start: int) -> None:
    outside = (block < -PROB_SUM_TOL) | (block > 1 + PROB_SUM_TOL)
    if outside.any():
        row = start + int(np.argmax(outside.any(axis=1)))
        raise InputError(f"probs must lie in [0, 1] (row {row}); pass logits= for unnormalised scores")
    err = np.abs(block.sum(axis=1) - 1.0)
    if (err > PROB_SUM_TOL).any():
        row = int(np.argmax(err > PROB_SUM_TOL))
        raise InputError(f"probs do not sum to 1: row {start + row} sums to {block[row].sum():.6g} "
                         f"(tolerance {PROB_SUM_TOL:g}); pass logits= for unnormalised scores")
