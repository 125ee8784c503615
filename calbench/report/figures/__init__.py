"""The papers' figures, one module each, registered in FIGURES (calbench.registry.Registry).

A new figure is one module in this package: it decorates its draw function with
`calbench.report.figures.base.figure(name, paper=..., options=[click.option(...), ...])`, and
`calbench plot <name>` appears with those options (every module here is imported below).

FIGURES.get(name)(results, out_dir, fmt="png", **options) -> list[Path]
"""

import importlib
import pkgutil

from calbench.report.figures.base import FIGURES, filter_results


def _import_every_module() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_every_module()

__all__ = ["FIGURES", "filter_results"]
