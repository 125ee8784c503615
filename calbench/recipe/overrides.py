"""What changes a recipe after it is written: `--set KEY=VALUE` on the command line, environment
variables in paths and options, and the recipe's own `overrides:` entries.

Precedence: calbench defaults < recipe < `overrides` entries (the most specific match wins) <
`--set`. An override entry applies to every run whose dataset, backbone and method match all its
`match` patterns (shell-style wildcards), in order of specificity (number of matched keys; ties in
recipe order), later ones winning.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from typing import Any

import yaml

from calbench.errors import ConfigError
from calbench.recipe.common import MATCH_KEYS, OVERRIDE_KEYS, TOP_KEYS, Recipe, config_error
from calbench.recipe.loader import yaml_load
from calbench.registry import did_you_mean


def expand_env(value: str) -> str:
    """$VAR and ${VAR} from the environment (os.path.expandvars): an unset variable is left as
    written, so the dataset-root check names it ("environment variable X is not set")."""
    return os.path.expandvars(value)


def parse_set_value(text: str) -> Any:
    """A --set VALUE is YAML (`[0, 1]`, `1e-3`, `true`); text that is not valid YAML stays a string."""
    try:
        return yaml_load(text)
    except (yaml.YAMLError, RecursionError):
        return text


def apply_sets(raw: dict[str, Any], sets: tuple[str, ...] | list[str], path: str) -> dict[str, Any]:
    """Apply `--set a.b=value` overrides (value parsed as YAML) to the raw recipe mapping."""
    raw = copy.deepcopy(raw)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE (e.g. train.epochs=2)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in TOP_KEYS:
            raise ConfigError(f"--set {key}: unknown key '{parts[0]}'{did_you_mean(parts[0], list(TOP_KEYS))}; "
                              f"valid: {', '.join(TOP_KEYS)}")
        _set_path(raw, parts, parse_set_value(value), key, path)
    return raw


def _set_path(raw: dict[str, Any], parts: list[str], value: Any, key: str, path: str) -> None:
    """Walk `parts` (mapping keys, or list indices where the recipe has a list) and set the leaf."""
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if isinstance(node, list):          # datasets.0.root: an index into a list
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: '{part}' is not an index of {where} "
                                  f"(0..{len(node) - 1}) in {path}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{where}' is not a mapping in {path}")
        if depth == len(parts) - 1:
            node[part] = value
            return
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        if isinstance(node[part], str) and isinstance(node, list):
            # `- digits` / `- ce` written as a bare name: widen it so an option can be set
            node[part] = {"name": node[part]} if parts[0] == "datasets" else {node[part]: {}}
        node = node[part]


def matching_overrides(recipe: Recipe, dataset: str, backbone: str, method: str) -> list[dict[str, Any]]:
    """The override entries that apply to one cell, least specific first (so later ones win)."""
    values = {"dataset": dataset, "backbone": backbone, "method": method}
    hits = [ov for ov in recipe.overrides
            if all(fnmatch.fnmatchcase(values[k], pat) for k, pat in ov["match"].items())]
    return sorted(hits, key=lambda ov: len(ov["match"]))   # stable: later and more specific win


def override_shape(ov: Any, path: str, key: str) -> dict[str, Any]:
    """One `overrides:` entry's keys, before its values are checked against the matrix."""
    if not isinstance(ov, dict) or not isinstance(ov.get("match"), dict):
        raise config_error(path, key, "expected {match: {dataset|backbone|method: pattern}, "
                                      "train|method|backbone: {...}}")
    for k in ov:
        if k not in OVERRIDE_KEYS:
            raise config_error(path, f"{key}.{k}", f"unknown key; valid: {', '.join(OVERRIDE_KEYS)}")
    for k in ov["match"]:
        if k not in MATCH_KEYS:
            raise config_error(path, f"{key}.match.{k}", f"unknown key; valid: {', '.join(MATCH_KEYS)}")
    entry = {"match": {k: str(v) for k, v in ov["match"].items()}}
    for part, what in (("method", "hyper-parameters"), ("backbone", "backbone options"),
                       ("dataset", "dataset options")):
        entry[part] = ov.get(part) or {}
        if not isinstance(entry[part], dict):
            raise config_error(path, f"{key}.{part}", f"expected a mapping of {what}")
    return entry
