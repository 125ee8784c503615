"""Tiny fixtures in every evaluation set's real on-disk layout, built in tmp_path, and the clean
datasets (built by calbench.data.create_dataset from tiny fixtures too) they are evaluated against.

FIXTURES maps every registered evaluation set to its clean dataset, how its root is made
(make(tmp_path) -> root, None for generated sets), the options that fit, and how many EvalSets it
gives; tests/shift/test_registry.py fails when an entry of EVAL_SETS has no fixture here.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from calbench.data import create_dataset

RNG = np.random.default_rng(0)
IMAGENET_WNIDS = ("n0a", "n0b", "n0c", "n0d", "n0e")
TINY_WNIDS = ("n1x", "n1y", "n1z")
CORRUPTIONS = ("fog", "gaussian_noise")
N_PER_SEVERITY = 4


def save_image(path: Path, size=(24, 20), suffix_format="JPEG", mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(RNG.integers(0, 255, shape, dtype=np.uint8), mode).save(path, suffix_format)


# ---------------------------------------------------------------- clean datasets


def make_cifar(root: Path, kind: str, n_train=10, n_test=6) -> Path:
    """The python-pickle batches of CIFAR-10 / CIFAR-100 (few images)."""
    folder, files, key = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels")
                          if kind == "cifar10" else ("cifar-100-python", ["train", "test"], b"fine_labels"))
    classes = 10 if kind == "cifar10" else 100
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for f in files:
        n = n_test if f.startswith("test") else n_train
        batch = {b"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8),
                 key: [int(v) for v in RNG.integers(0, classes, n)]}
        pickle.dump(batch, open(d / f, "wb"))
    meta, names_key = ("batches.meta", b"label_names") if kind == "cifar10" else ("meta", b"fine_label_names")
    pickle.dump({names_key: [f"c{i}".encode() for i in range(classes)]}, open(d / meta, "wb"))
    return root


def make_imagenet(root: Path, wnids=IMAGENET_WNIDS, per_class=2) -> Path:
    for w in wnids:
        for i in range(per_class):
            save_image(root / "train" / w / f"{w}_{i}.JPEG")
            save_image(root / "val" / w / f"val_{w}_{i}.JPEG")
    return root


def make_tiny_imagenet(root: Path, wnids=TINY_WNIDS, per_class=3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tword {w}\n" for w in wnids))
    lines = []
    for w in wnids:
        for i in range(per_class):
            save_image(root / "train" / w / "images" / f"{w}_{i}.JPEG", size=(64, 64))
        save_image(root / "val" / "images" / f"val_{w}.JPEG", size=(64, 64))
        lines.append(f"val_{w}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


CLEAN: dict[str, Callable[[Path], object]] = {
    "digits": lambda path: create_dataset("digits"),
    "cifar10": lambda path: create_dataset("cifar10", make_cifar(path / "clean-cifar10", "cifar10"), val_size=5),
    "cifar100": lambda path: create_dataset("cifar100", make_cifar(path / "clean-cifar100", "cifar100"), val_size=5),
    "tiny-imagenet": lambda path: create_dataset("tiny-imagenet", make_tiny_imagenet(path / "clean-tiny"),
                                                 val_per_class=1),
    "imagenet": lambda path: create_dataset("imagenet", make_imagenet(path / "clean-imagenet"), image_size=32,
                                            val_fraction=0.5),
}


# ---------------------------------------------------------------- evaluation sets in their layouts


def make_cifar_c(root: Path, classes: int = 10, corruptions=CORRUPTIONS, n=N_PER_SEVERITY,
                 labels_per_severity: bool = False) -> Path:
    """<corruption>.npy uint8 (5n, 32, 32, 3) and labels.npy (5n labels, or n)."""
    root.mkdir(parents=True, exist_ok=True)
    for c in corruptions:
        np.save(root / f"{c}.npy", RNG.integers(0, 255, (5 * n, 32, 32, 3), dtype=np.uint8))
    labels = RNG.integers(0, classes, n).astype(np.uint8)
    np.save(root / "labels.npy", labels if labels_per_severity else np.tile(labels, 5))
    return root


def make_imagenet_c(root: Path, wnids, corruptions=CORRUPTIONS, severities=(1, 2, 3, 4, 5), size=32,
                    per_class=1) -> Path:
    """<corruption>/<severity>/<wnid>/*.JPEG."""
    for c in corruptions:
        for s in severities:
            for w in wnids:
                for i in range(per_class):
                    save_image(root / c / str(s) / w / f"ILSVRC2012_val_{w}_{i}.JPEG", size=(size, size))
    return root


def make_class_folders(root: Path, folders, suffix=".jpg", per_class=2) -> Path:
    """<folder>/*.jpg: ImageNet-R / -A (wnids) and ImageNet-V2 (class indices)."""
    for f in folders:
        for i in range(per_class):
            save_image(root / str(f) / f"{i}{suffix}", size=(30, 26))
    (root / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text("a stray file the reader must ignore\n")
    return root


def make_svhn(root: Path, n=7, file="test_32x32.mat") -> Path:
    """SVHN's MATLAB file: X uint8 (32, 32, 3, N), y (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    x = RNG.integers(0, 255, (32, 32, 3, n), dtype=np.uint8)
    y = RNG.integers(1, 11, (n, 1)).astype(np.uint8)
    savemat(root / file, {"X": x, "y": y})
    return root


def make_image_folder(root: Path) -> Path:
    save_image(root / "a" / "one.jpg")
    save_image(root / "a" / "deeper" / "two.png", suffix_format="PNG")
    save_image(root / "three.JPEG", mode="L")
    (root / "notes.txt").write_text("not an image\n")
    return root


@dataclass(frozen=True)
class EvalFixture:
    clean: str
    make: Callable[[Path], Path | None]
    options: dict = field(default_factory=dict)
    sets: int = 5      # how many EvalSets the fixture gives


def _generated(clean: str = "cifar10", sets: int = 5) -> EvalFixture:
    return EvalFixture(clean, lambda path: None, {"chunk_size": 4}, sets)


FIXTURES: dict[str, EvalFixture] = {
    "cifar10-c": EvalFixture("cifar10", lambda p: make_cifar_c(p / "CIFAR-10-C"), sets=10),
    "cifar100-c": EvalFixture("cifar100", lambda p: make_cifar_c(p / "CIFAR-100-C", classes=100),
                              {"corruptions": ["fog"], "severities": [1, 5]}, sets=2),
    "tiny-imagenet-c": EvalFixture("tiny-imagenet", lambda p: make_imagenet_c(p / "Tiny-ImageNet-C", TINY_WNIDS,
                                                                              size=64),
                                   {"severities": [2, 4]}, sets=4),
    "imagenet-c": EvalFixture("imagenet", lambda p: make_imagenet_c(p / "ImageNet-C", IMAGENET_WNIDS),
                              {"corruptions": "gaussian_noise"}, sets=5),
    "imagenet-r": EvalFixture("imagenet", lambda p: make_class_folders(p / "imagenet-r", ("n0b", "n0d", "n0e")), sets=1),
    "imagenet-a": EvalFixture("imagenet", lambda p: make_class_folders(p / "imagenet-a", ("n0a", "n0c")), sets=1),
    "imagenet-v2": EvalFixture("imagenet", lambda p: make_class_folders(p / "imagenetv2-matched-frequency",
                                                                        (0, 1, 2, 3, 4), suffix=".jpeg"), sets=1),
    "svhn": EvalFixture("cifar10", lambda p: make_svhn(p / "svhn"), sets=1),
    "cifar10": EvalFixture("cifar100", lambda p: make_cifar(p / "ood-cifar10", "cifar10"), sets=1),
    "cifar100": EvalFixture("cifar10", lambda p: make_cifar(p / "ood-cifar100", "cifar100"), sets=1),
    "image-folder": EvalFixture("digits", lambda p: make_image_folder(p / "places"), {"name": "places"}, sets=1),
    "gaussian": _generated("digits", 1),
    "uniform": _generated("cifar10", 1),
    "inverted": _generated("digits", 1),
}


def fixture_for(name: str) -> EvalFixture:
    """Generated corruption families share one fixture (every family registered in CORRUPTIONS)."""
    from calbench.shift import CORRUPTIONS

    if name in FIXTURES:
        return FIXTURES[name]
    if name in CORRUPTIONS:
        return _generated("cifar10", 5)
    raise KeyError(name)
