"""The `train:` section (and `train:` of override entries): field kinds from `TrainConfig`'s
defaults, finite numbers in their ranges, the schedule shorthand.

Why ranges here: a learning rate of `.nan`, a momentum of 1.5 or a batch size of 0 would otherwise
start a run that fails (or, worse, trains and then fails writing its JSON); every number is checked
before anything trains.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable

from calbench.recipe.common import config_error
from calbench.registry import did_you_mean
from calbench.specs import TrainConfig
from calbench.validation import check_like_default

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "multistep", "cosine")
DATA_ON_DEVICE = ("auto", "on", "off")   # calbench.data.device_resident
TRAIN_TYPES = {f.name: f.type for f in fields(TrainConfig)}
_DEFAULTS = TrainConfig()

# field -> (what the error says it must be, the rule); every other number: >= 0
_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "epochs": ("positive", lambda v: v >= 1),
    "batch_size": ("positive", lambda v: v >= 1),
    "eval_batch_size": ("positive", lambda v: v >= 1),
    "world_size": ("positive", lambda v: v >= 1),
    "lr": ("> 0", lambda v: v > 0),
    "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "gamma": ("> 0", lambda v: v > 0),
    "meta_fraction": ("in [0, 1)", lambda v: 0 <= v < 1),
}
_NON_NEGATIVE = (">= 0", lambda v: v >= 0)


def check_train(train: Any, path: str, key: str = "train") -> dict[str, Any]:
    """Validate a (partial) train mapping; returns it with canonical types and schedule fields."""
    if train is None:
        return {}
    if not isinstance(train, dict):
        raise config_error(path, key, f"expected a mapping, got {train!r}")
    out: dict[str, Any] = {}
    for k, v in train.items():
        if k == "schedule":
            out.update(check_schedule(v, path, f"{key}.schedule"))
            continue
        if k not in TRAIN_TYPES:
            raise config_error(path, f"{key}.{k}", f"unknown key{did_you_mean(str(k), list(TRAIN_TYPES))}; "
                                                   f"valid: schedule, {', '.join(TRAIN_TYPES)}")
        out[k] = check_train_value(k, v, path, f"{key}.{k}")
    return out


def check_train_value(k: str, v: Any, path: str, key: str) -> Any:
    """One train field: its default's kind, then its range (milestones: non-negative epochs)."""
    default = getattr(_DEFAULTS, k)
    if k == "milestones":
        v = check_like_default(v, (0,), f"{path}: {key}")
        bad = [m for m in v if m < 0]
        if bad:
            raise config_error(path, key, f"epochs must be >= 0, got {bad[0]}")
        return v
    if k == "data_on_device":
        return check_data_on_device(v, path, key)
    v = check_like_default(v, default, f"{path}: {key}")
    if k == "optimizer" and v not in OPTIMIZERS:
        raise config_error(path, key, f"unknown optimizer {v!r}{did_you_mean(str(v), list(OPTIMIZERS))}; "
                                      f"valid: {', '.join(OPTIMIZERS)}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        must, ok = _RANGES.get(k, _NON_NEGATIVE)
        if not ok(v):
            raise config_error(path, key, f"must be {must}, got {v}")
    return v


def check_data_on_device(v: Any, path: str, key: str) -> str:
    """auto | on | off (YAML reads on/off/true/false as booleans: they mean on and off)."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if v not in DATA_ON_DEVICE:
        raise config_error(path, key, f"expected auto, on or off, got {v!r}")
    return v


def check_schedule(v: Any, path: str, key: str) -> dict[str, Any]:
    """'none' | 'cosine' | {multistep: [40, 60], gamma: 0.1} | {cosine: {}}"""
    if isinstance(v, str) or v is None:
        kind = v or "none"
        if kind not in SCHEDULES:
            raise config_error(path, key, f"unknown schedule {kind!r}{did_you_mean(str(kind), list(SCHEDULES))}; "
                                          f"valid: {', '.join(SCHEDULES)}")
        if kind == "multistep":
            raise config_error(path, key, "multistep needs its milestones: {multistep: [40, 60], gamma: 0.1}")
        return {"schedule": kind}
    if not isinstance(v, dict):
        raise config_error(path, key, f"expected a name or a mapping, got {v!r}")
    kinds = [k for k in v if k in SCHEDULES]
    extra = [k for k in v if k not in SCHEDULES and k != "gamma"]
    if len(kinds) != 1 or extra:
        raise config_error(path, key, f"expected one of {', '.join(SCHEDULES)} (plus gamma), got {sorted(map(str, v))}")
    kind = kinds[0]
    out: dict[str, Any] = {"schedule": kind}
    if kind == "multistep":
        out["milestones"] = check_train_value("milestones", v[kind], path, f"{key}.multistep")
    if "gamma" in v:
        out["gamma"] = check_train_value("gamma", v["gamma"], path, f"{key}.gamma")
    return out
