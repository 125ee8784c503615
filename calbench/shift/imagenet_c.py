"""Tiny-ImageNet-C and ImageNet-C (Hendrycks & Dietterich, ICLR 2019) from their released layout:
`<corruption>/<severity 1-5>/<wnid>/*.JPEG`, images already at the model resolution (64 and 224).

The label of an image is the index of its wnid among the clean dataset's classes: the clean class
names where they are the wnids (ImageNet, ImageNet-LT), else the sorted wnid folders themselves
when there are as many as the clean dataset has classes (Tiny-ImageNet, whose class names are
words, labels its classes by sorted wnid too). Files are listed when a set is opened, not before.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from calbench.data.image_folder import ImageList
from calbench.shift.sets import EvalSet, eval_set, layout_error, native_transform, parse_severities

LAYOUT = "<root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG (wnids of the clean dataset)"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def corruption_dirs(name: str, root: Path, corruptions) -> dict[str, Path]:
    """{corruption: folder}: every folder of root holding severity folders, or the requested ones."""
    found = {p.name: p for p in subfolders(root) if any(q.name in "12345" for q in subfolders(p))}
    wanted = sorted(found) if corruptions is None else [corruptions] if isinstance(corruptions, str) \
        else list(corruptions)
    for c in wanted:
        if c not in found:
            raise layout_error(name, root / c, "is missing or has no severity folder 1-5")
    if not wanted:
        raise layout_error(name, root, "holds no <corruption>/<severity> folder")
    return {c: found[c] for c in wanted}


def check(name: str, root: Path, corruptions=None, severities=(1, 2, 3, 4, 5), **_) -> None:
    for folder in corruption_dirs(name, root, corruptions).values():
        for s in parse_severities(name, severities):
            if not (folder / str(s)).is_dir():
                raise layout_error(name, folder / str(s), "is missing")


def class_index(name: str, folder: Path, wnids: list[str], clean) -> dict[str, int]:
    """wnid -> clean label (see the module docstring)."""
    names = list(clean.class_names)
    if set(wnids) <= set(names):
        return {w: names.index(w) for w in wnids}
    if len(wnids) == clean.num_classes:
        return {w: i for i, w in enumerate(sorted(wnids))}
    raise layout_error(name, folder, f"has {len(wnids)} wnid folders that are not the {clean.num_classes} "
                                     f"classes of '{clean.name}'")


def open_severity(name: str, folder: Path, clean, transform) -> ImageList:
    """The ImageList of <corruption>/<severity>: every image of every wnid folder, labelled."""
    wnid_dirs = subfolders(folder)
    if not wnid_dirs:
        raise layout_error(name, folder, "has no <wnid> folder")
    index = class_index(name, folder, [d.name for d in wnid_dirs], clean)
    paths, labels = [], []
    for d in wnid_dirs:
        files = images_in(d)
        paths += files
        labels += [index[d.name]] * len(files)
    if not paths:
        raise layout_error(name, folder, "holds no image")
    return ImageList(paths, labels, transform)


def build(name: str, clean, root: Path, corruptions, severities) -> list[EvalSet]:
    transform, sets = native_transform(clean), []
    for corruption, folder in corruption_dirs(name, root, corruptions).items():
        for s in parse_severities(name, severities):
            if not (folder / str(s)).is_dir():
                raise layout_error(name, folder / str(s), "is missing")
            opener = partial(open_severity, name, folder / str(s), clean, transform)
            sets.append(EvalSet(id=f"shift:{name}:{corruption}:{s}", kind="shift", source=name,
                                family=corruption, severity=s, opener=opener,
                                meta={"family": corruption, "severity": s, "generated": False,
                                      "path": str(folder / str(s))}))
    return sets


@eval_set("tiny-imagenet-c", kind="shift", layout=LAYOUT, needs_root=True, check=partial(check, "tiny-imagenet-c"),
          description="Tiny-ImageNet-C: the released corruptions (JPEG folders), severities 1-5",
          paper="Hendrycks & Dietterich, ICLR 2019")
def build_tiny_imagenet_c(clean, root: Path, seed: int = 0, corruptions=None, severities=(1, 2, 3, 4, 5)):
    """Tiny-ImageNet-C; corruptions: folder names (default: all)."""
    return build("tiny-imagenet-c", clean, root, corruptions, severities)


@eval_set("imagenet-c", kind="shift", layout=LAYOUT, needs_root=True, check=partial(check, "imagenet-c"),
          description="ImageNet-C: the released corruptions (JPEG folders), severities 1-5",
          paper="Hendrycks & Dietterich, ICLR 2019")
def build_imagenet_c(clean, root: Path, seed: int = 0, corruptions=None, severities=(1, 2, 3, 4, 5)):
    """ImageNet-C; corruptions: folder names (default: all)."""
    return build("imagenet-c", clean, root, corruptions, severities)
