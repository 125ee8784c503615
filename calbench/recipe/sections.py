"""`parse_recipe`: the raw YAML mapping -> a validated `Recipe`, one function per section.

Every value is checked here, before anything trains: names against their registries, options and
hyper-parameters against their defaults' kinds (calbench.validation.check_like_default), every
number finite, seeds in the range the seeding code accepts. Each problem is one ConfigError
'<file>: <key>: <problem>'.
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import re
from typing import Any

from calbench.errors import CalbenchError, ConfigError
from calbench.recipe.common import (DATASET_KEYS, TOP_KEYS, Recipe, config_error, name_and_options,
                                        non_empty_list)
from calbench.recipe.overrides import expand_env, override_shape
from calbench.recipe.train import check_train
from calbench.registry import did_you_mean
from calbench.validation import check_finite, check_like_default

MAX_SEED = 2**32 - 1     # numpy's seeding takes 32-bit seeds; torch's generators take them too


def parse_recipe(raw: dict[str, Any], path: str = "<recipe>") -> Recipe:
    """Validate a raw recipe mapping (after --set); raises ConfigError naming the file and key."""
    _check_top_level(raw, path)
    seeds = _parse_seeds(raw.get("seeds", [0]), path)
    datasets = [_parse_dataset(item, path, f"datasets[{i}]")
                for i, item in enumerate(non_empty_list(raw, "datasets", path))]
    backbones = [_parse_backbone(item, path, f"backbones[{i}]")
                 for i, item in enumerate(non_empty_list(raw, "backbones", path))]
    _check_dataset_backbones(datasets, backbones, path)
    methods = [_parse_method(item, path, f"methods[{i}]")
               for i, item in enumerate(non_empty_list(raw, "methods", path))]
    recipe = Recipe(path=path, name=raw["name"], seeds=seeds,
                    datasets=datasets, backbones=backbones, methods=methods,
                    train=check_train(raw.get("train"), path), posthoc=_parse_posthoc(raw, path),
                    description=_parse_description(raw.get("description"), path),
                    select=_parse_select(raw.get("select"), [m for m, _ in methods], path),
                    keep_weights=_parse_keep_weights(raw.get("keep_weights", True), path))
    recipe.overrides = [_parse_override(ov, recipe, path, f"overrides[{i}]")
                        for i, ov in enumerate(raw.get("overrides") or [])]
    return recipe


def _check_top_level(raw: dict[str, Any], path: str) -> None:
    for key in raw:
        if key not in TOP_KEYS:
            raise config_error(path, str(key), f"unknown key{did_you_mean(str(key), list(TOP_KEYS))}; "
                                               f"valid: {', '.join(TOP_KEYS)}")
    for key in ("name", "datasets", "backbones", "methods"):
        if key not in raw:
            raise config_error(path, key, "missing (required)")
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise config_error(path, "name", f"expected a simple name (letters, digits, '_', '-', '.'), got {name!r}")
    if raw.get("overrides") is not None and not isinstance(raw["overrides"], list):
        raise config_error(path, "overrides", f"expected a list, got {raw['overrides']!r}")


def _parse_keep_weights(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise config_error(path, "keep_weights", f"expected true or false, got {value!r}")
    return value


def _parse_description(value: Any, path: str) -> str:
    if value is not None and not isinstance(value, (str, int, float)):
        raise config_error(path, "description", f"expected text, got a {type(value).__name__}")
    return "" if value is None else str(value)


def _parse_seeds(seeds: Any, path: str) -> list[int]:
    """An integer or a non-empty list of integers in [0, 2**32 - 1]."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        raise config_error(path, "seeds", f"expected a list of integers, got {seeds!r}")
    for i, seed in enumerate(seeds):
        if not 0 <= seed <= MAX_SEED:
            raise config_error(path, f"seeds[{i}]", f"expected an integer in [0, {MAX_SEED}], got {seed}")
    return list(seeds)


def _parse_dataset(item: Any, path: str, key: str) -> dict[str, Any]:
    """`name` or {name, root, options, backbones}; environment variables expand in root and options."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise config_error(path, key, "expected a name or {name: ..., root: ..., options: {...}}")
    unknown = sorted(map(str, set(item) - set(DATASET_KEYS)))
    if unknown:
        raise config_error(path, f"{key}.{unknown[0]}", f"unknown key{did_you_mean(unknown[0], list(DATASET_KEYS))}; "
                                                         f"valid: {', '.join(DATASET_KEYS)}")
    only_backbones = item.get("backbones")
    if only_backbones is not None and (not isinstance(only_backbones, list)
                                       or not all(isinstance(b, str) for b in only_backbones)):
        raise config_error(path, f"{key}.backbones", "expected a list of backbone names")
    name = _dataset_name(item["name"], path, f"{key}.name")
    options = item.get("options") or {}
    if not isinstance(options, dict):
        raise config_error(path, f"{key}.options", "expected a mapping")
    options = {k: expand_env(v) if isinstance(v, str) else v for k, v in options.items()}
    check_dataset_options(name, options, path, f"{key}.options")
    root = item.get("root")
    if root is not None and not isinstance(root, str):
        raise config_error(path, f"{key}.root", f"expected a path, got {root!r}")
    return {"name": name, "root": expand_env(root) if root else None, "options": options,
            "backbones": only_backbones, "evaluate": _parse_evaluate(item.get("evaluate"), path, f"{key}.evaluate")}


def _parse_evaluate(value: Any, path: str, key: str) -> list[dict[str, Any]]:
    """`evaluate: {shift: [name | {name: {root: ..., option: value}}], ood: [...]}`: evaluation sets
    (calbench.shift.EVAL_SETS) run on a finished run's weights; not part of any run id."""
    from calbench.recipe.common import EVALUATE_KINDS
    from calbench.shift import EVAL_SETS, check_eval_root, eval_set_names
    from calbench.shift.storage import STORAGE_MODES

    if value is None:
        return []
    if not isinstance(value, dict) or set(value) - set(EVALUATE_KINDS) - {"storage"}:
        raise config_error(path, key, f"expected a mapping with keys {', '.join(EVALUATE_KINDS)}, storage")
    storage = value.get("storage", "auto")
    if storage not in STORAGE_MODES:
        raise config_error(path, f"{key}.storage", f"expected one of {', '.join(STORAGE_MODES)}, got {storage!r}")
    sets = []
    for kind in EVALUATE_KINDS:
        items = value.get(kind) or []
        if not isinstance(items, list):
            raise config_error(path, f"{key}.{kind}", "expected a list of evaluation sets")
        for i, item in enumerate(items):
            name, options = name_and_options(item, path, f"{key}.{kind}[{i}]")
            valid = eval_set_names(kind)
            if name not in valid:
                raise config_error(path, f"{key}.{kind}[{i}]", f"unknown {kind} set '{name}'"
                                                              f"{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
            root = options.pop("root", None)
            root = expand_env(root) if isinstance(root, str) else root
            try:
                check_eval_root(name, root, **options)
            except CalbenchError as err:
                raise config_error(path, f"{key}.{kind}[{i}]", str(err)) from None
            sets.append({"name": name, "kind": EVAL_SETS.entry(name).meta["kind"], "root": root, "options": options,
                         "storage": storage})
    return sets


def _dataset_name(name: Any, path: str, key: str) -> str:
    from calbench.data import DATASETS

    if not isinstance(name, str) or name not in DATASETS:
        raise config_error(path, key, f"unknown dataset '{name}'{did_you_mean(str(name), DATASETS.names())}; "
                                      f"valid: {', '.join(DATASETS.names())}")
    return name


def check_dataset_options(name: str, options: dict[str, Any], path: str, key: str) -> None:
    """Known option names, each of its default's kind; numbers finite and >= 0 (sizes, ratios)."""
    from calbench.data import dataset_options

    valid = dataset_options(name)
    for opt, value in options.items():
        if opt not in valid:
            raise config_error(path, f"{key}.{opt}", f"unknown option for {name}{did_you_mean(str(opt), list(valid))}; "
                                                      f"valid: {', '.join(valid) or 'none'}")
        try:
            value = check_like_default(value, valid[opt], f"{path}: {key}.{opt}")
        except ConfigError as err:
            raise ConfigError(f"{err}{_unset_variables_hint(value)}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise config_error(path, f"{key}.{opt}", f"must be >= 0, got {value}")


def _unset_variables_hint(value: Any) -> str:
    """' (environment variable X is not set)' when a string still holds a $X that did not expand."""
    unset = sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value))) if isinstance(value, str) else []
    return f" (environment variable {', '.join(unset)} is not set)" if unset else ""


def _parse_backbone(item: Any, path: str, key: str) -> tuple[str, dict[str, Any]]:
    from calbench.models import is_backbone, list_backbones

    name, options = name_and_options(item, path, key)
    if not is_backbone(name):
        own = [n for n, _ in list_backbones()]
        raise config_error(path, key, f"unknown backbone '{name}'{did_you_mean(name, own)}; valid: "
                                      f"{', '.join(own)} or any timm model name")
    check_backbone_options(name, options, path, f"{key}.{name}")
    return name, options


def check_backbone_options(name: str, options: dict[str, Any], path: str, key: str) -> None:
    """Option names of a calbench backbone against its factory's signature, values against their
    defaults' kinds (timm models take any option: checked when built; their numbers must be finite)."""
    from calbench.models import BACKBONES, DATASET_HINTS

    check_finite(options, f"{path}: {key}")
    if name not in BACKBONES:
        return
    params = inspect.signature(BACKBONES.get(name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k in params if k not in ("num_classes", "task")]
    for opt, value in options.items():
        if opt not in params and opt not in DATASET_HINTS:
            raise config_error(path, f"{key}.{opt}", f"unknown option for backbone {name}"
                                                      f"{did_you_mean(str(opt), valid)}; valid: {', '.join(valid) or 'none'}")
        if opt in params:
            check_like_default(value, params[opt].default, f"{path}: {key}.{opt}")


def _check_dataset_backbones(datasets: list[dict[str, Any]], backbones: list[tuple[str, Any]], path: str) -> None:
    names = [b for b, _ in backbones]
    for i, ds in enumerate(datasets):
        for b in ds["backbones"] or []:
            if b not in names:
                raise config_error(path, f"datasets[{i}].backbones", f"'{b}' is not in the recipe's backbones "
                                                                     f"({', '.join(names)})")


def _parse_method(item: Any, path: str, key: str) -> tuple[str, dict[str, Any]]:
    name, hparams = name_and_options(item, path, key)
    check_method(name, hparams, path, f"{key}.{name}")
    return name, hparams


def check_method(name: str, hparams: dict[str, Any], path: str, key: str) -> None:
    """Unknown method / hyper-parameter / wrong kind / non-finite number (every sweep value)."""
    from calbench.methods import check_hparams

    check_finite(hparams, f"{path}: {key}")
    for values in itertools.product(*[v if isinstance(v, list) else [v] for v in hparams.values()]):
        try:
            check_hparams(name, dict(zip(hparams, values)))
        except CalbenchError as err:
            raise config_error(path, key, str(err)) from None


def _parse_posthoc(raw: dict[str, Any], path: str) -> list[str]:
    from calbench.posthoc import POSTHOC

    posthoc = raw.get("posthoc", ["ts"]) or []
    if isinstance(posthoc, str):
        posthoc = [posthoc]
    if not isinstance(posthoc, list):
        raise config_error(path, "posthoc", f"expected a list, got {posthoc!r}")
    for i, p in enumerate(posthoc):
        if not isinstance(p, str) or p not in POSTHOC:
            raise config_error(path, f"posthoc[{i}]", f"unknown post-hoc calibrator '{p}'"
                                                      f"{did_you_mean(str(p), POSTHOC.names())}; "
                                                      f"valid: {', '.join(POSTHOC.names())}")
    return list(posthoc)


def _parse_select(value: Any, methods: list[str], path: str) -> dict[str, Any] | None:
    """`select: {by: val.<metric>, subject_to: "val.acc >= ce.val.acc - 1.0"}`: how `calbench report`
    picks a swept method's configuration on validation (calbench.report.selection); checked here,
    applied at report time, so it never changes a run id. A method it names must be in `methods`."""
    if value is None:
        return None
    from calbench.report.selection import parse_select

    try:
        spec = parse_select(value, "select")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for ref in spec.subject_to.refs() if spec.subject_to else []:
        if ref.method and ref.method not in methods:
            raise config_error(path, "select.subject_to", f"method '{ref.method}' is not in the recipe's methods "
                                                          f"({', '.join(dict.fromkeys(methods))})")
    return spec.to_json()


def _parse_override(ov: Any, recipe: Recipe, path: str, key: str) -> dict[str, Any]:
    """One `overrides:` entry, its values checked against every cell it matches."""
    entry = override_shape(ov, path, key)
    entry["train"] = check_train(ov.get("train"), path, f"{key}.train")
    pattern = entry["match"].get("dataset", "*")
    for ds in recipe.datasets:
        if fnmatch.fnmatchcase(ds["name"], pattern):
            check_dataset_options(ds["name"], entry["dataset"], path, f"{key}.dataset")
    _check_override_method(entry, recipe, path, key)
    for bb, _ in recipe.backbones:
        if fnmatch.fnmatchcase(bb, entry["match"].get("backbone", "*")):
            check_backbone_options(bb, entry["backbone"], path, f"{key}.backbone")
    return entry


def _check_override_method(entry: dict[str, Any], recipe: Recipe, path: str, key: str) -> None:
    if not entry["method"]:
        return
    for hp, value in entry["method"].items():
        if isinstance(value, list):   # a sweep here would be applied after the cells exist
            raise config_error(path, f"{key}.method.{hp}", f"a list (sweep) is not allowed in overrides, "
                                                           f"got {value!r}; sweep in methods: instead")
    if "method" not in entry["match"]:
        raise config_error(path, f"{key}.method", "method hyper-parameters need a `method` in match")
    for name, _ in recipe.methods:
        if fnmatch.fnmatchcase(name, entry["match"]["method"]):
            check_method(name, entry["method"], path, f"{key}.method")
