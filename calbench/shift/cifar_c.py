"""CIFAR-10-C and CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019) from their released layout.

`<corruption>.npy`: uint8 (5 n, 32, 32, 3), severities 1..5 stacked (rows (s - 1) n .. s n - 1 are
severity s, n = 10,000 in the release); `labels.npy`: the labels, 5 n long (the test labels
repeated per severity) or n. Arrays are memory-mapped (numpy mmap_mode="r"): a set reads only
the rows it is asked for, so 19 corruptions x 50,000 images never sit in memory.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from calbench.data.image_folder import ArrayImages
from calbench.shift.sets import EvalSet, eval_set, layout_error, native_transform, parse_severities

LAYOUT = ("<root>/<corruption>.npy (uint8 (5n, 32, 32, 3): severities 1..5 stacked, n images each) "
          "and <root>/labels.npy (5n or n integer labels)")
FOLDERS = {"cifar10-c": "CIFAR-10-C", "cifar100-c": "CIFAR-100-C"}


def resolve(name: str, root: Path) -> Path:
    """root itself or root/CIFAR-10-C (CIFAR-100-C): the folder holding labels.npy."""
    for folder in (root, root / FOLDERS[name]):
        if (folder / "labels.npy").is_file():
            return folder
    raise layout_error(name, root / "labels.npy", "is missing")


def corruption_files(name: str, folder: Path, corruptions) -> dict[str, Path]:
    """{corruption: file}: the requested ones (all .npy but labels.npy by default), each present."""
    found = {p.stem: p for p in sorted(folder.glob("*.npy")) if p.stem != "labels"}
    wanted = sorted(found) if corruptions is None else [corruptions] if isinstance(corruptions, str) \
        else list(corruptions)
    for c in wanted:
        if c not in found:
            raise layout_error(name, folder / f"{c}.npy", "is missing")
    if not wanted:
        raise layout_error(name, folder, "holds no <corruption>.npy")
    return {c: found[c] for c in wanted}


def check(name: str, root: Path, corruptions=None, **_) -> None:
    corruption_files(name, resolve(name, root), corruptions)


def open_array(name: str, path: Path) -> np.ndarray:
    """Memory-map one corruption array and check its shape and type (the header only is read)."""
    try:
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise layout_error(name, path, f"is not a .npy array ({type(err).__name__})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.shape[0] % 5:
        raise layout_error(name, path, f"is {images.dtype} {images.shape}, not uint8 (5n, 32, 32, 3)")
    return images


def read_labels(name: str, folder: Path, rows: int, num_classes: int) -> np.ndarray:
    """labels.npy as int64, repeated to `rows` when it holds one severity's n labels."""
    path = folder / "labels.npy"
    labels = np.asarray(np.load(path), dtype=np.int64).reshape(-1)
    if len(labels) == rows // 5:
        labels = np.tile(labels, 5)
    if len(labels) != rows:
        raise layout_error(name, path, f"holds {len(labels)} labels for {rows} images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise layout_error(name, path, f"has labels outside 0..{num_classes - 1} (the clean dataset's classes)")
    return labels


def build(name: str, clean, root: Path, seed: int = 0, corruptions=None, severities=(1, 2, 3, 4, 5)) -> list[EvalSet]:
    """One EvalSet per (corruption, severity): rows of the memory-mapped array, clean normalisation."""
    folder = resolve(name, root)
    transform, sets = native_transform(clean), []
    for corruption, path in corruption_files(name, folder, corruptions).items():
        images = open_array(name, path)
        labels = read_labels(name, folder, images.shape[0], clean.num_classes)
        n = images.shape[0] // 5
        for s in parse_severities(name, severities):
            rows = slice((s - 1) * n, s * n)
            opener = partial(ArrayImages, images[rows], labels[rows], transform)
            sets.append(EvalSet(id=f"shift:{name}:{corruption}:{s}", kind="shift", source=name,
                                family=corruption, severity=s, opener=opener,
                                meta={"family": corruption, "severity": s, "generated": False, "path": str(path)}))
    return sets


@eval_set("cifar10-c", kind="shift", layout=LAYOUT, needs_root=True, check=partial(check, "cifar10-c"),
          description="CIFAR-10-C: the released corruptions (.npy), severities 1-5",
          paper="Hendrycks & Dietterich, ICLR 2019")
def build_cifar10_c(clean, root: Path, seed: int = 0, corruptions=None, severities=(1, 2, 3, 4, 5)):
    """CIFAR-10-C; corruptions: a list of file stems (default: every .npy but labels.npy)."""
    return build("cifar10-c", clean, root, seed, corruptions, severities)


@eval_set("cifar100-c", kind="shift", layout=LAYOUT, needs_root=True, check=partial(check, "cifar100-c"),
          description="CIFAR-100-C: the released corruptions (.npy), severities 1-5",
          paper="Hendrycks & Dietterich, ICLR 2019")
def build_cifar100_c(clean, root: Path, seed: int = 0, corruptions=None, severities=(1, 2, 3, 4, 5)):
    """CIFAR-100-C; corruptions: a list of file stems (default: every .npy but labels.npy)."""
    return build("cifar100-c", clean, root, seed, corruptions, severities)
