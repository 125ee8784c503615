"""PASCAL VOC 2012 semantic segmentation (21 classes, ignore_index 255).

The official train list (1464) is split 80/20 into train/val (1171/293, seeded); the official val
list (1449) is the test. Masks are the palette PNGs of SegmentationClass (pixel = class index,
255 = object border / void, ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from calbench.data.base import DatasetBundle, dataset
from calbench.data.image_folder import load_rgb
from calbench.data.splits import random_holdout
from calbench.data import transforms as tf
from calbench.errors import InputError

LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette), "
          "ImageSets/Segmentation/{train,val}.txt}")
CLASS_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
PARTS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt",
         "ImageSets/Segmentation/val.txt")


def _fail(path: Path, problem: str):
    raise InputError(f"dataset 'voc2012': {path} {problem}; expected layout: {LAYOUT}")


def resolve(root: Path) -> Path:
    """root may be the folder holding VOCdevkit, VOCdevkit itself, or VOC2012 itself."""
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    _fail(root / "VOCdevkit" / "VOC2012" / "JPEGImages", "is missing")


def check(root: Path, **_) -> None:
    voc = resolve(root)
    for part in PARTS:
        if not (voc / part).exists():
            _fail(voc / part, "is missing")


def read_ids(voc: Path, split: str) -> list[str]:
    path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        _fail(path, "lists no image id")
    for i in ids:
        for f in (voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"):
            if not f.is_file():
                _fail(f, f"(id '{i}' of {path.name}) is missing")
    return ids


class VOCSegmentation(Dataset):
    """Image ids -> joint(image, mask) = (float tensor (3, H, W), int64 mask (H, W) with 255 ignored)."""

    def __init__(self, voc: Path, ids: list[str], joint: Callable):
        self.voc, self.ids, self.joint = voc, list(ids), joint

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from PIL import Image

        image = load_rgb(self.voc / "JPEGImages" / f"{self.ids[i]}.jpg")
        with Image.open(self.voc / "SegmentationClass" / f"{self.ids[i]}.png") as m:
            if m.mode not in ("P", "L"):
                raise InputError(f"{m.filename}: mask mode {m.mode}, expected a palette (P) PNG of class indices")
            mask = m.copy()
        return self.joint(image, mask)


@dataset("voc2012", description="PASCAL VOC 2012 segmentation: train 80/20 train/val, val = test",
         task="segmentation", num_classes=21, layout=LAYOUT, check=check)
def build_voc2012(root: Path, seed: int = 0, crop_size: int = 512, val_fraction: float = 0.2) -> DatasetBundle:
    """VOC 2012: train random scale/crop/flip (joint); test resize + centre crop; ignore 255."""
    voc = resolve(root)
    official_train, official_val = read_ids(voc, "train"), read_ids(voc, "val")
    n_val = int(round(val_fraction * len(official_train)))
    if not 0 < n_val < len(official_train):
        raise InputError(f"dataset 'voc2012': val_fraction {val_fraction} leaves an empty split")
    train, val = random_holdout(len(official_train), n_val, seed, salt="voc2012")
    test_tf = tf.JointTest(crop_size)
    return DatasetBundle(
        name="voc2012",
        train=VOCSegmentation(voc, [official_train[i] for i in train], tf.JointTrain(crop_size)),
        val=VOCSegmentation(voc, [official_train[i] for i in val], test_tf),
        test=VOCSegmentation(voc, official_val, test_tf),
        num_classes=21, class_names=list(CLASS_NAMES), task="segmentation",
        input_shape=(3, crop_size, crop_size),
        split_indices={"train": train, "val": val, "test": np.arange(len(official_val))},
        ignore_index=tf.IGNORE_INDEX,
        backbone_options={"in_chans": 3, "input_size": (crop_size, crop_size)},
    )
