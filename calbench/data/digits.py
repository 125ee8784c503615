"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): real data, no download.

The file is read straight from scikit-learn's package data (`sklearn/datasets/data/digits.csv.gz`,
64 pixel values 0..16 and the label per line) with numpy, without importing scikit-learn: that import
costs about a second in every worker and gives the same arrays (tested against load_digits).

Splits (docs/datasets.md): `digits` is stratified 60/20/20 (train 1078 / val 360 / test 359).
`digits-lt` holds out 35 images per class for val and 35 for test (balanced, 350 each), then
subsamples the remaining train pool to an exponential long tail n_i = n_max * r^(-i/(K-1)), with
n_max the smallest class count of the pool (104) so the profile is exact; r = imbalance_ratio.
Samples are float32 tensors (1, 8, 8) scaled to [0, 1] in a TensorDataset, so the engine can
iterate whole tensors without DataLoader overhead. No augmentation: a horizontal flip would turn
digits into other shapes (a flipped 2 is no 2), and the papers train digit-like data without one.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from calbench.data.base import DatasetBundle, dataset
from calbench.data.splits import (balanced_per_class, long_tail_counts, per_class_holdout,
                                  stratified_fractions, subsample_per_class)

LT_HOLDOUT_PER_CLASS = 35
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")
LAYOUT = "none: ships with scikit-learn"


def digits_file() -> Path:
    """Where scikit-learn keeps digits.csv.gz, found without importing scikit-learn."""
    from calbench.errors import InputError

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("dataset 'digits' reads the digits file bundled with scikit-learn: "
                         "install scikit-learn (pip install scikit-learn)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*DIGITS_FILE)
    if not path.is_file():
        raise InputError(f"dataset 'digits': {path} is missing from the scikit-learn install")
    return path


@lru_cache(maxsize=1)
def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(X float32 (1797, 1, 8, 8) in [0, 1], y int64 (1797,)): pixels / 16 as scikit-learn's images."""
    with gzip.open(digits_file(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    x = (table[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 16.0)[:, None, :, :]
    return x, table[:, -1].astype(np.int64)


def _tensor_dataset(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x[idx].copy()), torch.from_numpy(y[idx].copy()))


def _bundle(name: str, splits: dict[str, np.ndarray]) -> DatasetBundle:
    x, y = load_arrays()
    return DatasetBundle(
        name=name,
        train=_tensor_dataset(x, y, splits["train"]),
        val=_tensor_dataset(x, y, splits["val"]),
        test=_tensor_dataset(x, y, splits["test"]),
        num_classes=10, class_names=[str(i) for i in range(10)], task="classification",
        input_shape=(1, 8, 8), split_indices=splits,
        backbone_options={"in_chans": 1, "input_size": (8, 8)},
    )


@dataset("digits", description="scikit-learn's bundled 8x8 handwritten digits (embedded)", task="classification",
         num_classes=10, layout=LAYOUT + " (stratified 60/20/20)", needs_root=False)
def build_digits(root=None, seed: int = 0) -> DatasetBundle:
    """Digits, stratified 60/20/20 (seeded)."""
    _, y = load_arrays()
    train, val, test = stratified_fractions(y, (0.6, 0.2, 0.2), seed, salt="digits")
    return _bundle("digits", {"train": train, "val": val, "test": test})


@dataset("digits-lt", description="digits with a long-tailed train split (imbalance_ratio)",
         task="classification", num_classes=10, needs_root=False, shot_thresholds="terciles",
         layout=LAYOUT + " (long-tail train, balanced val/test)")
def build_digits_lt(root=None, seed: int = 0, imbalance_ratio: float = 10.0) -> DatasetBundle:
    """Digits with a long-tailed train split; val/test balanced and disjoint from train."""
    from calbench.errors import ConfigError

    if not imbalance_ratio >= 1:
        raise ConfigError(f"digits-lt: imbalance_ratio must be >= 1, got {imbalance_ratio}")
    _, y = load_arrays()
    pool, held = per_class_holdout(y, 2 * LT_HOLDOUT_PER_CLASS, seed, salt="digits-lt")
    val, test = per_class_holdout(y[held], LT_HOLDOUT_PER_CLASS, seed, salt="digits-lt-test")
    val, test = balanced_per_class(y, held[val]), balanced_per_class(y, held[test])
    n_max = min(int((y[pool] == c).sum()) for c in range(10))
    counts = long_tail_counts(n_max, 10, float(imbalance_ratio))
    train = subsample_per_class(y, pool, counts, seed)
    return _bundle("digits-lt", {"train": train, "val": val, "test": test})
