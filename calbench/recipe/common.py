"""What every section parser shares: the validated `Recipe`, the known keys and the error form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calbench.errors import ConfigError

TOP_KEYS = ("name", "description", "seeds", "datasets", "backbones", "methods", "train", "posthoc",
            "overrides", "select", "keep_weights")
DATASET_KEYS = ("name", "root", "options", "backbones", "evaluate")
EVALUATE_KINDS = ("shift", "ood")
OVERRIDE_KEYS = ("match", "train", "method", "backbone", "dataset")
MATCH_KEYS = ("dataset", "backbone", "method")


@dataclass
class Recipe:
    """A validated recipe; `methods` are (method name, {hparam: value or sweep list}) in recipe order."""

    path: str
    name: str
    seeds: list[int]
    datasets: list[dict[str, Any]]          # {"name", "root", "options", "backbones"}
    backbones: list[tuple[str, dict[str, Any]]]
    methods: list[tuple[str, dict[str, Any]]]
    train: dict[str, Any]
    posthoc: list[str]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    select: dict[str, Any] | None = None    # {"by", "subject_to"}: report-time selection, not part of any run id
    keep_weights: bool = True               # keep model.pt of finished runs (evaluation sets need it)


def config_error(path: str, key: str, problem: str) -> ConfigError:
    """The one form of a recipe error: '<file>: <key>: <problem>'."""
    return ConfigError(f"{path}: {key}: {problem}")


def name_and_options(item: Any, path: str, key: str) -> tuple[str, dict[str, Any]]:
    """`name` or `{name: {option: value}}` (a backbone or a method entry)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, opts = next(iter(item.items()))
        if opts is None:
            opts = {}
        if not isinstance(name, str) or not isinstance(opts, dict):
            raise config_error(path, key, "expected a name or {name: {option: value}}")
        return name, dict(opts)
    raise config_error(path, key, f"expected a name or {{name: {{option: value}}}}, got {item!r}")


def non_empty_list(raw: dict[str, Any], key: str, path: str) -> list[Any]:
    value = raw[key]
    if not isinstance(value, list) or not value:
        raise config_error(path, key, "expected a non-empty list")
    return value
