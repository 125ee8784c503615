"""CIFAR-10 / CIFAR-100 from the standard python-pickle batches; 45k/5k train/val (seeded), official test.

Root is either the extracted folder (`cifar-10-batches-py`, `cifar-100-python`) or its parent.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np

from calbench.data.base import DatasetBundle, dataset
from calbench.data.image_folder import ArrayImages
from calbench.data.splits import random_holdout
from calbench.data import transforms as tf
from calbench.errors import InputError

SPEC = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", label_key=b"labels",
                    names_key=b"label_names", classes=10,
                    mean=tf.CIFAR10_MEAN, std=tf.CIFAR10_STD),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     label_key=b"fine_labels", names_key=b"fine_label_names", classes=100,
                     mean=tf.CIFAR100_MEAN, std=tf.CIFAR100_STD),
}
LAYOUT = {
    "cifar10": "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (python pickle batches)",
    "cifar100": "cifar-100-python/{train,test,meta} (python pickle batches)",
}


def resolve(name: str, root: Path) -> Path:
    """The folder holding the batches: root itself or root/<standard folder>; else InputError."""
    spec = SPEC[name]
    for cand in (root / spec["folder"], root):
        if all((cand / f).is_file() for f in spec["train"] + spec["test"] + [spec["meta"]]):
            return cand
    missing = [f for f in spec["train"] + spec["test"] + [spec["meta"]]
               if not (root / spec["folder"] / f).is_file() and not (root / f).is_file()]
    raise InputError(f"dataset '{name}': {root} lacks {', '.join(missing)}; expected layout: {LAYOUT[name]}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except Exception as err:  # a truncated or foreign file
        raise InputError(f"{path}: not a CIFAR python pickle batch ({type(err).__name__})") from None


def _read(folder: Path, files: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        d = _unpickle(folder / f)
        if b"data" not in d or label_key not in d:
            raise InputError(f"{folder / f}: CIFAR batch without b'data' / {label_key!r}")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def check(name: str, root: Path, **_) -> None:
    resolve(name, root)


def build(name: str, root: Path, seed: int, val_size: int = 5000, hflip: bool = True) -> DatasetBundle:
    spec = SPEC[name]
    folder = resolve(name, root)
    x, y = _read(folder, spec["train"], spec["label_key"])
    xt, yt = _read(folder, spec["test"], spec["label_key"])
    if not 0 < val_size < len(y):
        raise InputError(f"dataset '{name}': val_size {val_size} must be within 1..{len(y) - 1}")
    train, val = random_holdout(len(y), int(val_size), seed, salt=name)
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in _unpickle(folder / spec["meta"]).get(spec["names_key"], [])]
    mean, std = spec["mean"], spec["std"]
    train_tf, test_tf = tf.small_image_train(32, mean, std, hflip=hflip), tf.small_image_test(32, mean, std)
    return DatasetBundle(
        name=name,
        train=ArrayImages(x[train], y[train], train_tf),
        val=ArrayImages(x[val], y[val], test_tf),
        test=ArrayImages(xt, yt, test_tf),
        num_classes=spec["classes"], class_names=names or [str(i) for i in range(spec["classes"])],
        task="classification", input_shape=(3, 32, 32),
        split_indices={"train": train, "val": val, "test": np.arange(len(yt))},
        backbone_options={"in_chans": 3, "input_size": (32, 32)},
    )


@dataset("cifar10", description="CIFAR-10: 45k/5k train/val (seeded), official test", task="classification",
         num_classes=10, layout=LAYOUT["cifar10"], check=partial(check, "cifar10"))
def build_cifar10(root: Path, seed: int = 0, val_size: int = 5000, hflip: bool = True) -> DatasetBundle:
    """CIFAR-10: 45k/5k train/val from the training batches (seeded), official test batch.
    Train: RandomCrop(32, padding 4) + horizontal flip (hflip: false turns the flip off)."""
    return build("cifar10", root, seed, val_size, hflip)


@dataset("cifar100", description="CIFAR-100: 45k/5k train/val (seeded), official test", task="classification",
         num_classes=100, layout=LAYOUT["cifar100"], check=partial(check, "cifar100"))
def build_cifar100(root: Path, seed: int = 0, val_size: int = 5000, hflip: bool = True) -> DatasetBundle:
    """CIFAR-100 (fine labels): 45k/5k train/val (seeded), official test; train augmentation as CIFAR-10."""
    return build("cifar100", root, seed, val_size, hflip)
