"""ImageNet (ILSVRC-2012) and ImageNet-LT (the OLTR list files over an ImageNet root).

ImageNet: train/<wnid>/*.JPEG is the train split; the official val (val/<wnid>/*.JPEG) is split
per class 20% val / 80% test (seeded). ImageNet-LT: list files with lines
`<path relative to root> <int label>` define train / val / test exactly (no seed involved).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calbench.data.base import DatasetBundle, dataset
from calbench.data.image_folder import ImageList, subset
from calbench.data.splits import stratified_fractions
from calbench.data import transforms as tf
from calbench.errors import InputError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
LAYOUT = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into wnid folders)"
LT_LISTS = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
LT_LAYOUT = ("ImageNet root plus the OLTR list files ImageNet_LT_{train,val,test}.txt "
             "(in list_dir, default the root), each line '<relative path> <int label>'")


def _fail(name: str, path: Path, problem: str, layout: str):
    raise InputError(f"dataset '{name}': {path} {problem}; expected layout: {layout}")


def check_imagenet(root: Path, **_) -> None:
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir() or not any(p.is_dir() for p in d.iterdir()):
            _fail("imagenet", d, "is missing or has no <wnid> folder", LAYOUT)


def _folder(root: Path, split: str, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    paths, labels = [], []
    for i, w in enumerate(wnids):
        d = root / split / w
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
        if not files:
            _fail("imagenet", d, "is missing or holds no image", LAYOUT)
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


@dataset("imagenet", description="ImageNet: train; official val split 20/80 into val/test per class",
         task="classification", num_classes=1000, layout=LAYOUT, check=check_imagenet)
def build_imagenet(root: Path, seed: int = 0, image_size: int = 224, val_fraction: float = 0.2) -> DatasetBundle:
    """ImageNet: train RandomResizedCrop + flip; test Resize(256) + CenterCrop(224)."""
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_paths, train_labels = _folder(root, "train", wnids)
    val_paths, val_labels = _folder(root, "val", wnids)
    val, test = stratified_fractions(val_labels, (val_fraction, 1 - val_fraction), seed, salt="imagenet")
    official = ImageList(val_paths, val_labels)
    test_tf = tf.imagenet_test(image_size)
    return DatasetBundle(
        name="imagenet",
        train=ImageList(train_paths, train_labels, tf.imagenet_train(image_size)),
        val=subset(official, val, test_tf), test=subset(official, test, test_tf),
        num_classes=len(wnids), class_names=wnids, task="classification",
        input_shape=(3, image_size, image_size),
        split_indices={"train": np.arange(len(train_labels)), "val": val, "test": test},
        backbone_options={"in_chans": 3, "input_size": (image_size, image_size)},
    )


def _list_paths(root: Path, list_dir: str | None) -> dict[str, Path]:
    base = root if not list_dir else (Path(list_dir) if Path(list_dir).is_absolute() else root / list_dir)
    return {split: base / fname for split, fname in LT_LISTS.items()}


def check_imagenet_lt(root: Path, list_dir: str | None = None, **_) -> None:
    for path in _list_paths(root, list_dir).values():
        if not path.is_file():
            _fail("imagenet-lt", path, "is missing", LT_LAYOUT)


def read_list(root: Path, path: Path) -> tuple[list[Path], np.ndarray]:
    """Parse '<relative path> <int label>' lines; every listed image must exist."""
    paths, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            _fail("imagenet-lt", path, f"line {n} is not '<relative path> <int label>'", LT_LAYOUT)
        image = root / parts[0]
        if not image.is_file():
            _fail("imagenet-lt", image, f"(listed in {path.name} line {n}) is missing", LT_LAYOUT)
        paths.append(image)
        labels.append(int(parts[1]))
    if not paths:
        _fail("imagenet-lt", path, "lists no image", LT_LAYOUT)
    return paths, np.asarray(labels, dtype=np.int64)


@dataset("imagenet-lt", description="ImageNet-LT: the OLTR train/val/test list files", task="classification",
         num_classes=1000, layout=LT_LAYOUT, check=check_imagenet_lt)
def build_imagenet_lt(root: Path, seed: int = 0, list_dir: str | None = None,
                      image_size: int = 224) -> DatasetBundle:
    """ImageNet-LT: the OLTR lists define the splits (train 5..1280/class, val 20/class, test 50/class)."""
    lists = {split: read_list(root, path) for split, path in _list_paths(root, list_dir).items()}
    num_classes = int(max(labels.max() for _, labels in lists.values())) + 1
    names = [str(i) for i in range(num_classes)]
    for paths, labels in lists.values():  # the wnid folder of a listed image names its class
        for p, c in zip(paths, labels):
            names[c] = p.parent.name
    test_tf = tf.imagenet_test(image_size)
    make = {"train": tf.imagenet_train(image_size), "val": test_tf, "test": test_tf}
    return DatasetBundle(
        name="imagenet-lt",
        **{s: ImageList(*lists[s], make[s]) for s in ("train", "val", "test")},
        num_classes=num_classes, class_names=names, task="classification",
        input_shape=(3, image_size, image_size),
        split_indices={s: np.arange(len(lists[s][1])) for s in lists},
        backbone_options={"in_chans": 3, "input_size": (image_size, image_size)},
    )
