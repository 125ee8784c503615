"""Tiny-ImageNet-200: 450/50 per class train/val from train (seeded); the official val is the test.

Label = index of the wnid in sorted wnids.txt; greyscale JPEGs are converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calbench.data.base import DatasetBundle, dataset
from calbench.data.image_folder import ImageList, subset
from calbench.data.splits import per_class_holdout
from calbench.data import transforms as tf
from calbench.errors import InputError

LAYOUT = ("wnids.txt (words.txt optional, for class names), train/<wnid>/images/*.JPEG, "
          "val/images/*.JPEG and tab-separated val/val_annotations.txt (<file>\\t<wnid>...)")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _fail(path: Path, problem: str):
    raise InputError(f"dataset 'tiny-imagenet': {path} {problem}; expected layout: {LAYOUT}")


def check(root: Path, **_) -> None:
    for rel in ("wnids.txt", "val/val_annotations.txt"):
        if not (root / rel).is_file():
            _fail(root / rel, "is missing")
    for rel in ("train", "val/images"):
        if not (root / rel).is_dir():
            _fail(root / rel, "is missing")


def read_wnids(root: Path) -> list[str]:
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()})
    if not wnids:
        _fail(root / "wnids.txt", "lists no wnid")
    return wnids


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def read_train(root: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    paths, labels = [], []
    for i, w in enumerate(wnids):
        files = _images(root / "train" / w / "images")
        if not files:
            _fail(root / "train" / w / "images", "holds no image")
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def read_val(root: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    ann = root / "val" / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            _fail(ann, f"line {n} is not '<file>\\t<wnid in wnids.txt>'")
        path = root / "val" / "images" / parts[0].strip()
        if not path.is_file():
            _fail(path, f"(from {ann.name} line {n}) is missing")
        paths.append(path)
        labels.append(index[parts[1].strip()])
    return paths, np.asarray(labels, dtype=np.int64)


def _class_names(root: Path, wnids: list[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return list(wnids)
    table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
    return [table.get(w, w).split(",")[0].strip() for w in wnids]


@dataset("tiny-imagenet", description="Tiny-ImageNet: 450/50 per class train/val (seeded), official val = test",
         task="classification", num_classes=200, layout=LAYOUT, check=check)
def build_tiny_imagenet(root: Path, seed: int = 0, val_per_class: int = 50,
                        image_size: int = 64, hflip: bool = True) -> DatasetBundle:
    """Tiny-ImageNet: train RandomCrop(64, pad 4) + horizontal flip (hflip: false turns it off);
    test resize + centre crop (64)."""
    wnids = read_wnids(root)
    paths, labels = read_train(root, wnids)
    smallest = int(np.bincount(labels).min())
    if not 0 < val_per_class < smallest:
        raise InputError(f"dataset 'tiny-imagenet': val_per_class {val_per_class} must be below "
                         f"the smallest class count {smallest} in {root / 'train'}")
    train, val = per_class_holdout(labels, int(val_per_class), seed, salt="tiny-imagenet")
    test_paths, test_labels = read_val(root, wnids)
    full = ImageList(paths, labels)
    train_tf, test_tf = tf.small_image_train(image_size, hflip=hflip), tf.small_image_test(image_size)
    return DatasetBundle(
        name="tiny-imagenet",
        train=subset(full, train, train_tf), val=subset(full, val, test_tf),
        test=ImageList(test_paths, test_labels, test_tf),
        num_classes=len(wnids), class_names=_class_names(root, wnids), task="classification",
        input_shape=(3, image_size, image_size),
        split_indices={"train": train, "val": val, "test": np.arange(len(test_labels))},
        backbone_options={"in_chans": 3, "input_size": (image_size, image_size)},
    )
