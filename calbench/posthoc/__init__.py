"""Post-hoc calibrators behind one registry, fitted on a run's validation predictions only.

    fit_calibrator("ts", val_logits, val_labels)          # -> a fitted Calibrator (calbench.posthoc.base)
    create_calibrator("vs")                               # -> an unfitted one, hyper-parameters validated
    calibrator_hparams("ts")                              # -> {} (keyword-only __init__ arguments)
    calibrated_scores(calibrator, test_logits)            # -> (scores, "logits" | "probs") as the engine scores them

Adding a calibrator is one file in this package: a `Calibrator` subclass decorated with
`@POSTHOC.register(name, description=..., paper=...)`; every module here is imported below, so
`calbench report --posthoc NAME`, the recipe's `posthoc:` list and the registry-wide tests pick it up.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from calbench.errors import ConfigError
from calbench.posthoc.base import Calibrator, calibrated_scores, hparam_defaults
from calbench.posthoc.registry import POSTHOC
from calbench.registry import did_you_mean
from calbench.validation import check_like_default

# The calibrators of the papers' tables first (registry order = listing order), then every other module.
_FIRST = ("ts", "vs")
for _module in _FIRST + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__))):
    if _module not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["POSTHOC", "Calibrator", "calibrated_scores", "calibrator_hparams", "check_calibrator_hparams",
           "create_calibrator", "fit_calibrator", "list_posthoc"]


def list_posthoc() -> list[str]:
    return POSTHOC.names()


def calibrator_hparams(name: str) -> dict[str, Any]:
    """The calibrator's hyper-parameters with their defaults (UnknownNameError for an unknown name)."""
    return hparam_defaults(POSTHOC.get(name))


def check_calibrator_hparams(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Validate names and kinds of `hparams` for calibrator `name` (kind fixed by each default, as
    for methods); return the full set after defaults. ConfigError names the bad key."""
    defaults = calibrator_hparams(name)
    full = dict(defaults)
    for key, value in hparams.items():
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"{name}: unknown hyper-parameter '{key}'{did_you_mean(key, list(defaults))}; "
                              f"valid: {valid}")
        full[key] = check_like_default(value, defaults[key], f"{name}.{key}")
    return full


def create_calibrator(name: str, **hparams: Any) -> Calibrator:
    """An unfitted registered calibrator with validated keyword hyper-parameters (defaults filled in)."""
    return POSTHOC.get(name)(**check_calibrator_hparams(name, hparams))


def fit_calibrator(name: str, val_logits, val_labels, **hparams: Any) -> Calibrator:
    """A registered calibrator fitted on validation logits and labels (used as float64)."""
    return create_calibrator(name, **hparams).fit(val_logits, val_labels)
