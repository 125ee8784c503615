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
    """Real on-disk datasets (added family by family)."""


_register_builtin()

__all__ = ["DATASETS", "DatasetBundle", "DatasetFamily", "create_dataset", "dataset_options",
           "check_root"]
