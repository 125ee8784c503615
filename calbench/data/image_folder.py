"""Datasets over image files or in-memory uint8 arrays, decoded with PIL and converted to RGB."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset


def load_rgb(path: str | Path):
    """Decode an image file as RGB (Tiny-ImageNet and ImageNet hold some greyscale/CMYK JPEGs)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class ImageList(Dataset):
    """(path, label) pairs -> (transform(image), label)."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], transform: Callable | None = None):
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = load_rgb(self.paths[i])
        return (self.transform(image) if self.transform else image), int(self.labels[i])


class ArrayImages(Dataset):
    """uint8 images (N, H, W, 3) in memory (CIFAR) -> (transform(PIL image), label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.fromarray(self.images[i])
        return (self.transform(image) if self.transform else image), int(self.labels[i])


def subset(ds: ImageList, idx: np.ndarray, transform: Callable | None) -> ImageList:
    """A new ImageList of the rows `idx` of `ds` with its own transform."""
    return ImageList([ds.paths[i] for i in idx], ds.labels[idx], transform)
