"""Natural distribution shifts of ImageNet from their released layouts.

ImageNet-R (renditions; Hendrycks et al., ICCV 2021) and ImageNet-A (natural adversarial
examples; Hendrycks et al., CVPR 2021): `<wnid>/*.jpg` over 200 of the 1000 ImageNet classes. As
their authors evaluate, the logits are restricted to those 200 classes: the EvalSet's
class_subset holds the sorted indices of the 200 wnids among the clean class names (which must be
the wnids, as calbench's imagenet and imagenet-lt give them), and each label is the position of its
class in class_subset. ImageNet-V2 (Recht et al., ICML 2019): `<class index>/*.jpeg`, folders named
by the integer class index 0..999; root is one of its three variants (matched-frequency, ...).
All three go through the clean test transform (resize + centre crop + normalisation).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from calbench.data.image_folder import ImageList
from calbench.shift.imagenet_c import images_in, subfolders
from calbench.shift.sets import EvalSet, eval_set, foreign_transform, layout_error

SUBSET_LAYOUT = "<root>/<wnid>/*.jpg (200 wnid folders, each a class of the clean dataset)"
V2_LAYOUT = "<root>/<class index 0..999>/*.jpeg (folders named by integer class index)"


def _check_folders(name: str, root: Path, **_) -> None:
    if not subfolders(root):
        raise layout_error(name, root, "has no class folder")


def _list(name: str, root: Path, index: dict[str, int], transform) -> ImageList:
    paths, labels = [], []
    for d in subfolders(root):
        if d.name not in index:
            continue
        files = images_in(d)
        paths += files
        labels += [index[d.name]] * len(files)
    if not paths:
        raise layout_error(name, root, "holds no image")
    return ImageList(paths, labels, transform)


def subset_of(name: str, root: Path, clean) -> tuple[np.ndarray, dict[str, int]]:
    """(class_subset, wnid -> position in the subset); every folder must be a clean class."""
    names = {w: i for i, w in enumerate(clean.class_names)}
    wnids = [d.name for d in subfolders(root)]
    for w in wnids:
        if w not in names:
            raise layout_error(name, root / w, f"is not a class of '{clean.name}' (its class names must be wnids)")
    subset = np.asarray(sorted(names[w] for w in wnids), dtype=np.int64)
    position = {int(c): j for j, c in enumerate(subset)}
    return subset, {w: position[names[w]] for w in wnids}


def build_subset(name: str, clean, root: Path) -> list[EvalSet]:
    subset, index = subset_of(name, root, clean)
    opener = partial(_list, name, root, index, foreign_transform(clean))
    return [EvalSet(id=f"shift:{name}", kind="shift", source=name, family=name, severity=None, opener=opener,
                    class_subset=subset, meta={"family": name, "generated": False, "classes": len(subset)})]


@eval_set("imagenet-r", kind="shift", layout=SUBSET_LAYOUT, needs_root=True, check=partial(_check_folders, "imagenet-r"),
          description="ImageNet-R: renditions of 200 classes (logits restricted to them)",
          paper="Hendrycks et al., ICCV 2021")
def build_imagenet_r(clean, root: Path, seed: int = 0):
    """ImageNet-R; class_subset restricts the logits to its 200 classes."""
    return build_subset("imagenet-r", clean, root)


@eval_set("imagenet-a", kind="shift", layout=SUBSET_LAYOUT, needs_root=True, check=partial(_check_folders, "imagenet-a"),
          description="ImageNet-A: natural adversarial examples of 200 classes (logits restricted to them)",
          paper="Hendrycks et al., CVPR 2021")
def build_imagenet_a(clean, root: Path, seed: int = 0):
    """ImageNet-A; class_subset restricts the logits to its 200 classes."""
    return build_subset("imagenet-a", clean, root)


def v2_index(root: Path, num_classes: int) -> dict[str, int]:
    index = {}
    for d in subfolders(root):
        if not d.name.isdigit() or not 0 <= int(d.name) < num_classes:
            raise layout_error("imagenet-v2", d, f"is not named by a class index 0..{num_classes - 1}")
        index[d.name] = int(d.name)
    return index


@eval_set("imagenet-v2", kind="shift", layout=V2_LAYOUT, needs_root=True, check=partial(_check_folders, "imagenet-v2"),
          description="ImageNet-V2: a new test set drawn like ImageNet's (one variant folder)",
          paper="Recht et al., ICML 2019")
def build_imagenet_v2(clean, root: Path, seed: int = 0):
    """ImageNet-V2; folder names are the labels."""
    index = v2_index(root, clean.num_classes)
    opener = partial(_list, "imagenet-v2", root, index, foreign_transform(clean))
    return [EvalSet(id="shift:imagenet-v2", kind="shift", source="imagenet-v2", family="imagenet-v2",
                    severity=None, opener=opener, meta={"family": "imagenet-v2", "generated": False})]
