"""Dataset registry: `create_dataset(name, root=None, seed=0, **options) -> DatasetBundle`.

Each entry's object is a DatasetFamily (builder, layout check, option defaults); its meta holds
`task`, `num_classes` and `layout` for `calbench list datasets`. Nothing is downloaded: real
datasets read a local root whose layout is checked cheaply first (check_root).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from calbench.data.base import DatasetBundle
from calbench.errors import ConfigError, InputError
from calbench.registry import Registry


@dataclass(frozen=True)
class DatasetFamily:
    """How to build one dataset: build(root, seed, **options); check(root, **options) is cheap."""

    build: Callable[..., DatasetBundle]
    check: Callable[..., None] | None = None
    needs_root: bool = True

    @property
    def options(self) -> dict[str, Any]:
        params = list(inspect.signature(self.build).parameters.values())
        return {p.name: p.default for p in params if p.name not in ("root", "seed")}


DATASETS: Registry[DatasetFamily] = Registry("dataset")


def dataset_options(name: str) -> dict[str, Any]:
    """{option: default} that create_dataset(name, ...) accepts besides root and seed."""
    return dict(DATASETS.get(name).options)


def _validate_options(name: str, options: dict[str, Any]) -> None:
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"dataset '{name}': unknown option(s) {', '.join(unknown)} "
                          f"(valid: {', '.join(valid) or 'none'})")


def check_root(name: str, root: str | Path | None, **options: Any) -> None:
    """Raise InputError (one line: the path and the expected layout) unless root looks right."""
    family = DATASETS.get(name)
    _validate_options(name, options)
    if not family.needs_root:
        return
    layout = DATASETS.entry(name).meta.get("layout", "")
    if root is None or str(root) == "":
        raise InputError(f"dataset '{name}' needs a local root (nothing is downloaded); "
                         f"expected layout: {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise InputError(f"dataset '{name}': root {path} is not a directory; expected layout: {layout}")
    if family.check is not None:
        family.check(path, **options)


def create_dataset(name: str, root: str | Path | None = None, seed: int = 0,
                   **options: Any) -> DatasetBundle:
    """Build the train/val/test splits of dataset `name` (see `calbench list datasets`)."""
    family = DATASETS.get(name)
    check_root(name, root, **options)
    path = Path(root).expanduser() if root not in (None, "") else None
    return family.build(root=path, seed=int(seed), **options)


def _register_builtin() -> None:
    from calbench.data import digits

    DATASETS.register("digits", DatasetFamily(digits.build_digits, needs_root=False),
                      description="scikit-learn's bundled 8x8 handwritten digits (embedded)",
                      task="classification", num_classes=10,
                      layout="none: ships with scikit-learn (stratified 60/20/20)")
    DATASETS.register("digits-lt", DatasetFamily(digits.build_digits_lt, needs_root=False),
                      description="digits with a long-tailed train split (imbalance_ratio)",
                      task="classification", num_classes=10,
                      layout="none: ships with scikit-learn (long-tail train, balanced val/test)")
    _register_optional()


def _register_optional() -> None:
    """Real on-disk datasets: each reads its layout under a user-given root (DATASETS.md)."""
    from functools import partial

    from calbench.data import cifar, imagenet, newsgroups, tiny_imagenet, voc

    DATASETS.register("cifar10", DatasetFamily(cifar.build_cifar10, partial(cifar.check, "cifar10")),
                      description="CIFAR-10: 45k/5k train/val (seeded), official test",
                      task="classification", num_classes=10, layout=cifar.LAYOUT["cifar10"])
    DATASETS.register("cifar100", DatasetFamily(cifar.build_cifar100, partial(cifar.check, "cifar100")),
                      description="CIFAR-100: 45k/5k train/val (seeded), official test",
                      task="classification", num_classes=100, layout=cifar.LAYOUT["cifar100"])
    DATASETS.register("tiny-imagenet", DatasetFamily(tiny_imagenet.build_tiny_imagenet, tiny_imagenet.check),
                      description="Tiny-ImageNet: 450/50 per class train/val (seeded), official val = test",
                      task="classification", num_classes=200, layout=tiny_imagenet.LAYOUT)
    DATASETS.register("imagenet", DatasetFamily(imagenet.build_imagenet, imagenet.check_imagenet),
                      description="ImageNet: train; official val split 20/80 into val/test per class",
                      task="classification", num_classes=1000, layout=imagenet.LAYOUT)
    DATASETS.register("imagenet-lt", DatasetFamily(imagenet.build_imagenet_lt, imagenet.check_imagenet_lt),
                      description="ImageNet-LT: the OLTR train/val/test list files",
                      task="classification", num_classes=1000, layout=imagenet.LT_LAYOUT)
    DATASETS.register("voc2012", DatasetFamily(voc.build_voc2012, voc.check),
                      description="PASCAL VOC 2012 segmentation: train 80/20 train/val, val = test",
                      task="segmentation", num_classes=21, layout=voc.LAYOUT)
    DATASETS.register("20newsgroups", DatasetFamily(newsgroups.build_20newsgroups, newsgroups.check),
                      description="20 Newsgroups: token ids (1000 x 20k vocabulary), optional GloVe",
                      task="text", num_classes=20, layout=newsgroups.LAYOUT)


_register_builtin()

__all__ = ["DATASETS", "DatasetBundle", "DatasetFamily", "create_dataset", "dataset_options",
           "check_root"]
