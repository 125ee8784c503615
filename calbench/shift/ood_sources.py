"""Out-of-distribution sets from other datasets' real layouts: SVHN's test_32x32.mat, CIFAR-10 /
CIFAR-100's test batch (each the OOD set of the other), and a folder of images. Every sample goes
through the clean dataset's test transform (or, for tensor datasets like digits, greyscale +
resize + [0, 1]) and carries the label OOD_LABEL (-1): no class of the clean label space.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from calbench.data import cifar
from calbench.data.image_folder import ArrayImages, ImageList
from calbench.shift.sets import OOD_LABEL, EvalSet, eval_set, foreign_transform, layout_error

SVHN_LAYOUT = ("<root>/test_32x32.mat (the SVHN cropped-digits MATLAB file: X uint8 (32, 32, 3, N), "
               "y (N, 1) with 10 for digit 0)")
FOLDER_LAYOUT = "<root>/**/*.{jpg,jpeg,png} (images anywhere below root)"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _ood(name: str, opener, **meta) -> list[EvalSet]:
    return [EvalSet(id=f"ood:{name}", kind="ood", source=meta.pop("source", name), family=name, severity=None,
                    opener=opener, meta={"generated": False, **meta})]


# ---------------------------------------------------------------- SVHN


def svhn_file(root: Path, file: str) -> Path:
    path = root if root.is_file() else root / file
    if not path.is_file():
        raise layout_error("svhn", path, "is missing")
    return path


def read_svhn(path: Path) -> np.ndarray:
    """The images of an SVHN .mat file as uint8 (N, 32, 32, 3) (its labels are not needed)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as err:  # not a MATLAB file, or truncated
        raise layout_error("svhn", path, f"is not a MATLAB .mat file ({type(err).__name__})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or len(np.ravel(y)) != x.shape[3]:
        shape = None if x is None else x.shape
        raise layout_error("svhn", path, f"lacks X (32, 32, 3, N) with N labels y (X is {shape})")
    return np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 0, 1, 2))


def _open_svhn(path: Path, transform) -> ArrayImages:
    images = read_svhn(path)
    return ArrayImages(images, np.full(len(images), OOD_LABEL), transform)


@eval_set("svhn", kind="ood", layout=SVHN_LAYOUT, needs_root=True,
          check=lambda root, file="test_32x32.mat", **_: svhn_file(root, file) and None,
          description="OOD: SVHN test digits (test_32x32.mat)", paper="Netzer et al., NeurIPS-W 2011")
def build_svhn(clean, root: Path, seed: int = 0, file: str = "test_32x32.mat"):
    """SVHN's 26,032 test images (held in memory: 80 MB), in the clean format."""
    return _ood("svhn", partial(_open_svhn, svhn_file(root, file), foreign_transform(clean)))


# ---------------------------------------------------------------- CIFAR as OOD


def _open_cifar(name: str, root: Path, transform) -> ArrayImages:
    spec = cifar.SPEC[name]
    images, _ = cifar._read(cifar.resolve(name, root), spec["test"], spec["label_key"])
    return ArrayImages(images, np.full(len(images), OOD_LABEL), transform)


def _build_cifar(name: str, clean, root: Path) -> list[EvalSet]:
    cifar.resolve(name, root)
    return _ood(name, partial(_open_cifar, name, root, foreign_transform(clean)))


@eval_set("cifar10", kind="ood", layout=cifar.LAYOUT["cifar10"], needs_root=True,
          check=lambda root, **_: cifar.resolve("cifar10", root) and None,
          description="OOD: the CIFAR-10 test batch (for CIFAR-100 models)")
def build_cifar10_ood(clean, root: Path, seed: int = 0):
    """CIFAR-10's 10,000 test images, read by calbench.data.cifar."""
    return _build_cifar("cifar10", clean, root)


@eval_set("cifar100", kind="ood", layout=cifar.LAYOUT["cifar100"], needs_root=True,
          check=lambda root, **_: cifar.resolve("cifar100", root) and None,
          description="OOD: the CIFAR-100 test batch (for CIFAR-10 models)")
def build_cifar100_ood(clean, root: Path, seed: int = 0):
    """CIFAR-100's 10,000 test images, read by calbench.data.cifar."""
    return _build_cifar("cifar100", clean, root)


# ---------------------------------------------------------------- a folder of images


def folder_images(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise layout_error("image-folder", root, "holds no image")
    return files


def _open_folder(root: Path, transform) -> ImageList:
    files = folder_images(root)
    return ImageList(files, [OOD_LABEL] * len(files), transform)


@eval_set("image-folder", kind="ood", layout=FOLDER_LAYOUT, needs_root=True,
          check=lambda root, **_: folder_images(root) and None,
          description="OOD: every image below a folder (option name: the set's id)")
def build_image_folder(clean, root: Path, seed: int = 0, name: str = "image-folder"):
    """Every image below root, sorted by path; the set's id is ood:<name>."""
    if not isinstance(name, str) or not name or ":" in name:
        from calbench.errors import ConfigError

        raise ConfigError(f"eval set 'image-folder': name must be a non-empty string without ':', got {name!r}")
    return _ood(name, partial(_open_folder, root, foreign_transform(clean)), source="image-folder",
                path=str(root))
