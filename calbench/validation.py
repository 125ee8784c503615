"""One rule for user-given values whose kind is fixed by a default (train fields, method and
calibrator hyper-parameters, backbone and dataset options): a value must have its default's kind,
and every number must be finite.

Why one helper: a number where a list belongs (or `.nan` for a learning rate) would otherwise only
fail once a run trains, or worse, train and then fail writing JSON. Checking by the default keeps
the rule in one place for every kind of option, and the error names the key (`where`).
"""

from __future__ import annotations

import math
from typing import Any

from calbench.errors import ConfigError


def check_finite(value: Any, where: str) -> Any:
    """Every float inside `value` (scalars, lists, mappings) must be finite and every integer fit
    in 64 bits (what torch and numpy take); `value` unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        raise ConfigError(f"{where}: expected a 64-bit integer, got {value}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    return value


def _kind_of(default: Any) -> tuple[str, Any] | None:
    """(what the error says is expected, predicate) for the kind of `default`, or None (no rule)."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    if isinstance(default, (tuple, list)):
        return "a list", lambda v: isinstance(v, (list, tuple))
    return None


def check_like_default(value: Any, default: Any, where: str) -> Any:
    """`value` checked against the kind of `default`; returns it canonical (a float for a float
    default, a list for a tuple default). A None default or value means "no fixed kind": only
    finiteness is checked. A non-empty tuple default also fixes the kind of each item.

    Raises ConfigError "<where>: expected <kind>, got <value>" (one line, naming the key).
    """
    check_finite(value, where)
    rule = None if value is None else _kind_of(default)
    if rule is None:
        return value
    kind, accepts = rule
    if not accepts(value):
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (tuple, list)):
        if default:
            return [check_like_default(v, default[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return list(value)
    return value
