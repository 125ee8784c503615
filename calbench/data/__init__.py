"""Datasets: `create_dataset(name, root=None, seed=0, **options) -> DatasetBundle`.

Each module of this package registers its datasets in DATASETS with `calbench.data.base.dataset`
(every module is imported below, so a new dataset is one file). An entry's object is a DatasetFamily
(builder, layout check, option defaults); its meta holds `task`, `num_classes` and `layout` for
`calbench list datasets`. Nothing is downloaded: real datasets read a local root whose layout is
checked cheaply first (check_root). Layouts, splits and transforms: docs/datasets.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from calbench.data.base import DATASETS, DatasetBundle, DatasetFamily
from calbench.errors import ConfigError, InputError


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


def _import_every_module() -> None:
    """Importing a dataset module registers it (a new dataset is one module in this package)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_every_module()

__all__ = ["DATASETS", "DatasetBundle", "DatasetFamily", "create_dataset", "dataset_options",
           "check_root"]
