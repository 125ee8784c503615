"""Tiny fixtures in each dataset's real on-disk format, built in tmp_path.

FIXTURES maps every registered dataset to how its fixture is made: make(tmp_path) -> root (None for
an embedded dataset) and the options that fit the fixture's size. tests/data/test_registry.py fails
when a dataset in calbench.data.DATASETS has no entry here, and builds every dataset from its entry.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

RNG = np.random.default_rng(0)


def jpeg(path: Path, size=(64, 64), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(RNG.integers(0, 255, shape, dtype=np.uint8), mode).save(path, "JPEG")


def make_tiny_imagenet(root: Path, wnids=("n01", "n02", "n03"), per_class=6, val_per_class=2) -> Path:
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # order must not matter
    (root / "words.txt").write_text("".join(f"{w}\tthing {c}, other name\n" for c, w in enumerate(wnids))
                                    + "n99\tnot in wnids\n")
    lines = []
    for c, w in enumerate(wnids):
        for i in range(per_class):
            jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", mode="L" if i == 0 else "RGB")
        for i in range(val_per_class):
            name = f"val_{c}_{i}.JPEG"
            jpeg(root / "val" / "images" / name)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def make_cifar(root: Path, kind: str, n_train=40, n_test=12) -> Path:
    if kind == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        per = n_train // 5
        for b in range(1, 6):
            data = RNG.integers(0, 255, (per, 3072), dtype=np.uint8)
            labels = [int(v) for v in RNG.integers(0, 10, per)]
            pickle.dump({b"data": data, b"labels": labels}, open(d / f"data_batch_{b}", "wb"))
        pickle.dump({b"data": RNG.integers(0, 255, (n_test, 3072), dtype=np.uint8),
                     b"labels": [int(v) for v in RNG.integers(0, 10, n_test)]}, open(d / "test_batch", "wb"))
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, open(d / "batches.meta", "wb"))
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True)
        for split, n in (("train", n_train), ("test", n_test)):
            pickle.dump({b"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [int(v) for v in RNG.integers(0, 100, n)],
                         b"coarse_labels": [0] * n}, open(d / split, "wb"))
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, open(d / "meta", "wb"))
    return root


def make_imagenet(root: Path, wnids=("n0a", "n0b", "n0c"), n_train=4, n_val=5) -> Path:
    lt = {"train": [], "val": [], "test": []}
    for c, w in enumerate(wnids):
        for i in range(n_train):
            jpeg(root / "train" / w / f"{w}_{i}.JPEG", size=(40, 30))
            (lt["train"] if i < n_train - 1 - c % 2 else lt["val"]).append(f"train/{w}/{w}_{i}.JPEG {c}")
        for i in range(n_val):
            jpeg(root / "val" / w / f"ILSVRC2012_val_{c}{i}.JPEG", size=(30, 40))
            lt["test"].append(f"val/{w}/ILSVRC2012_val_{c}{i}.JPEG {c}")
    lists = root / "lists"
    lists.mkdir()
    for split, lines in lt.items():
        (lists / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192]


def make_voc(root: Path, n_train=10, n_val=4, size=(48, 40)) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)], "val": [f"2008_{i:06d}" for i in range(n_val)]}
    for split, names in ids.items():
        for name in names:
            jpeg(voc / "JPEGImages" / f"{name}.jpg", size=size)
            mask = np.zeros((size[1], size[0]), dtype=np.uint8)
            mask[5:20, 5:20] = 1
            mask[25:, 25:] = 2
            mask[4, :] = 255
            m = Image.fromarray(mask, "P")
            m.putpalette(PALETTE)
            (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            m.save(voc / "SegmentationClass" / f"{name}.png")
        sets = voc / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


WORDS = ["space", "orbit", "nasa", "hockey", "goal", "puck", "god", "church", "faith", "the", "a"]


def make_20news(root: Path, groups=("alt.atheism", "rec.sport.hockey", "sci.space"), per_group=10,
                bydate: bool = False) -> Path:
    for g, group in enumerate(groups):
        for i in range(per_group):
            top = ("20news-bydate-train" if i < per_group * 0.6 else "20news-bydate-test") if bydate else "20_newsgroups"
            d = root / top / group
            d.mkdir(parents=True, exist_ok=True)
            body = " ".join(WORDS[(g * 3 + k) % 9] for k in range(5 + i)) + " The end."
            (d / str(1000 + i)).write_text(f"From: someone@x.org\nSubject: HEADERWORD {i}\n\n{body}\n")
    (root / "glove.txt").write_text("".join(f"{w} {' '.join(str(0.1 * (j + k)) for k in range(4))}\n"
                                            for j, w in enumerate(WORDS[:6])))
    return root


@dataclass(frozen=True)
class Fixture:
    make: Callable[[Path], Path | None]
    options: dict = field(default_factory=dict)


FIXTURES: dict[str, Fixture] = {
    "digits": Fixture(lambda path: None),
    "digits-lt": Fixture(lambda path: None, {"imbalance_ratio": 5.0}),
    "cifar10": Fixture(lambda path: make_cifar(path, "cifar10"), {"val_size": 8}),
    "cifar100": Fixture(lambda path: make_cifar(path, "cifar100"), {"val_size": 8}),
    "tiny-imagenet": Fixture(lambda path: make_tiny_imagenet(path / "tiny-imagenet-200"),
                             {"val_per_class": 2, "image_size": 32}),
    "imagenet": Fixture(lambda path: make_imagenet(path / "imagenet"), {"image_size": 32}),
    "imagenet-lt": Fixture(lambda path: make_imagenet(path / "imagenet"), {"image_size": 32, "list_dir": "lists"}),
    "voc2012": Fixture(make_voc, {"crop_size": 32}),
    "20newsgroups": Fixture(lambda path: make_20news(path / "news"),
                            {"glove": "glove.txt", "max_len": 12, "val_size": 3}),
}


@pytest.fixture
def tiny_root(tmp_path):
    return make_tiny_imagenet(tmp_path / "tiny-imagenet-200")
