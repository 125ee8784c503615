"""Calibration methods behind one registry: train-time losses (METHODS); post-hoc calibrators are calbench.posthoc.

    create_method("cals-alm", num_classes=200, margin=10)   # -> a Method (calbench.methods.base)
    list_methods()                                          # -> registry names
    method_hparams("mbls")                                  # -> {"margin": 10.0, "weight": 0.1, ...}
    method_version("mbls")                                  # -> 1 (part of the run identity)

Adding a method is one file: a `Method` subclass (calbench/methods/base.py: implement `loss_rows`)
whose keyword-only `__init__` arguments (with their defaults) are its hyper-parameters, decorated
with `@METHODS.register(name, ...)`; every module of this package is imported below. Plus its
reference formula under tests/methods/references/; the registry-wide tests pick both up.
Formulas and conventions: docs/methods.md.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from calbench.errors import ConfigError
from calbench.methods.base import IGNORE_INDEX, Method
from calbench.methods.registry import METHODS
from calbench.posthoc import POSTHOC  # moved to calbench.posthoc; re-exported until its last users switch
from calbench.registry import did_you_mean
from calbench.validation import check_like_default

# The known families first, in the order of the papers' tables (registry order = listing order);
# then every other module of this package, so that a new method file needs no edit here.
_FAMILIES = ("cross_entropy", "label_smoothing", "focal", "penalties", "margin", "cals", "gammanet")
for _module in _FAMILIES + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__))):
    importlib.import_module(f"{__name__}.{_module}")
for _entry in METHODS.entries():      # a method class knows its registry name (messages, logs)
    if "name" not in vars(_entry.obj):
        _entry.obj.name = _entry.name

__all__ = ["METHODS", "POSTHOC", "Method", "IGNORE_INDEX", "create_method", "list_methods",
           "method_hparams", "method_version", "check_hparams", "fit_posthoc"]


def list_methods(pattern: str | None = None) -> list[str]:
    return METHODS.names(pattern)


def method_version(name: str) -> int:
    """The method's `version` (part of the run identity: bumped when a fix changes its results)."""
    return int(METHODS.get(name).version)


def method_hparams(name: str) -> dict[str, Any]:
    """The method's hyper-parameters with their published defaults (ignore_index included)."""
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    return {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_type(method: str, key: str, value: Any, default: Any) -> Any:
    """The value with its default's kind (ints widen to floats), finite; else a ConfigError naming the key."""
    if value is None and default is not None:
        raise ConfigError(f"{method}.{key}: expected a value like {default!r}, got null")
    return check_like_default(value, default, f"{method}.{key}")


def check_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Validate names and types of `hparams` for method `name`; return the full set after defaults.

    Raises ConfigError (a ValueError) naming the bad key, listing the valid ones and suggesting the
    closest; an unknown method raises UnknownNameError (also a ValueError).
    """
    defaults = method_hparams(name)
    full = dict(defaults)
    for key, value in hparams.items():
        if key not in defaults:
            valid = ", ".join(defaults)
            raise ConfigError(f"{name}: unknown hyper-parameter '{key}'{did_you_mean(key, list(defaults))}; "
                              f"valid: {valid}")
        full[key] = _check_type(name, key, value, defaults[key])
    return full


def create_method(name: str, num_classes: int, **hparams: Any) -> Method:
    """Build a registered method with keyword hyper-parameters (validated, defaults filled in)."""
    full = check_hparams(name, hparams)
    return METHODS.get(name)(int(num_classes), **full)


def fit_posthoc(name: str, val_logits, val_labels):
    """Alias of calbench.posthoc.fit_calibrator, kept only until the engine calls that directly."""
    from calbench.posthoc import fit_calibrator
    return fit_calibrator(name, val_logits, val_labels)
