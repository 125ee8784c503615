"""Seeded split indices: every split is a function of (labels, seed) so a run can be re-created."""

from __future__ import annotations

import numpy as np


def rng_for(seed: int, salt: str = "") -> np.random.Generator:
    """A generator keyed by the seed and a salt, so different splits of one run never share draws."""
    return np.random.default_rng([int(seed), sum(map(ord, salt))])


def stratified_fractions(labels: np.ndarray, fractions: tuple[float, ...], seed: int,
                         salt: str = "stratified") -> list[np.ndarray]:
    """Split each class by `fractions` (summing to 1): e.g. (0.6, 0.2, 0.2) -> [train, val, test]."""
    labels = np.asarray(labels)
    rng = rng_for(seed, salt)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(cum[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def per_class_holdout(labels: np.ndarray, n_holdout: int, seed: int,
                      salt: str = "holdout") -> tuple[np.ndarray, np.ndarray]:
    """Hold out `n_holdout` random indices per class -> (rest, holdout), both sorted."""
    labels = np.asarray(labels)
    rng = rng_for(seed, salt)
    rest, hold = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        hold.append(idx[:n_holdout])
        rest.append(idx[n_holdout:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(hold))


def random_holdout(n: int, n_holdout: int, seed: int, salt: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Hold out `n_holdout` of range(n) uniformly at random -> (rest, holdout), both sorted."""
    perm = rng_for(seed, salt).permutation(n)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Exponential profile n_i = n_max * ratio^(-i/(K-1)) (Cui et al. 2019), at least 1 per class."""
    if num_classes == 1:
        return [n_max]
    return [max(1, int(n_max * imbalance_ratio ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def subsample_per_class(labels: np.ndarray, pool: np.ndarray, counts: list[int], seed: int,
                        salt: str = "long-tail") -> np.ndarray:
    """Take counts[c] random indices of class c from `pool` (indices into labels)."""
    labels = np.asarray(labels)
    rng = rng_for(seed, salt)
    out = []
    for c, n in enumerate(counts):
        idx = pool[labels[pool] == c]
        out.append(rng.permutation(idx)[:n])
    return np.sort(np.concatenate(out))


def balanced_per_class(labels: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Trim `pool` to the same count per class (the smallest class count), keeping the first ones."""
    labels = np.asarray(labels)
    classes = np.unique(labels[pool])
    n = min(int((labels[pool] == c).sum()) for c in classes)
    return np.sort(np.concatenate([pool[labels[pool] == c][:n] for c in classes]))


def save_splits(path, split_indices: dict[str, np.ndarray]) -> None:
    """Write {split: indices} as an .npz beside a run (splits.npz) so it can be re-evaluated exactly."""
    np.savez(path, **{k: np.asarray(v, dtype=np.int64) for k, v in split_indices.items()})


def load_splits(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
