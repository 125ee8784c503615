"""YAML recipe -> typed, validated config -> the matrix of run specs.

A recipe names seeds, datasets, backbones and methods; `expand` makes one `RunSpec` per
dataset x backbone x method cell x seed (a list-valued hyper-parameter sweeps: one cell per value,
several lists give their product). Precedence: calbench defaults < recipe < `overrides` entries
(the most specific match wins) < command-line `--set key=value`. Every problem is a ConfigError
naming the file and the key, raised before any training starts.

    name: table1
    seeds: [0, 1, 2]
    datasets:
      - name: tiny-imagenet
        root: ${CALBENCH_DATA}/tiny-imagenet-200      # environment variables expand
        options: {val_per_class: 50}                  # dataset options (see `calbench list datasets`)
        backbones: [resnet50-tiny]                    # optional: only these backbones on it
    backbones: [resnet50-tiny]                        # a name or {name: {option: value}}
    methods: [ce, {ls: {alpha: 0.05}}, {cals-alm: {margin: [5, 10, 15]}}]
    train: {epochs: 100, batch_size: 128, optimizer: sgd, lr: 0.1,
            schedule: {multistep: [40, 60], gamma: 0.1}}
    posthoc: [ts]
    overrides:
      - match: {dataset: 20newsgroups}                # keys: dataset, backbone, method (wildcards)
        train: {optimizer: adam, lr: 1.0e-3}           # and/or method:, backbone:, dataset: {...}

Command line: `--set KEY=VALUE` (repeatable; VALUE parsed as YAML) sets a dotted key, with list
indices where the recipe has a list: `--set train.epochs=2`, `--set seeds=[0]`,
`--set datasets.0.root=/data/x`, `--set methods.1.cals-alm.margin=[5,10]`. `--only PATTERN` keeps
the runs whose method label (`cals-alm(margin=5)`), method, dataset, backbone or run id matches the
shell-style wildcard (fnmatch). Overrides: every entry whose `match` patterns all match applies,
in order of specificity (number of matched keys; ties in recipe order), later ones winning.

A run's id is a hash of everything its result depends on (method and its full hyper-parameters,
dataset and options, backbone and options, seed, training config including num_workers and
eval_batch_size, post-hoc list) — not the dataset root (moving the data does not invalidate
results) nor the results directory nor --jobs/--gpus.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from calbench.errors import CalbenchError, ConfigError
from calbench.registry import did_you_mean
from calbench.specs import SCHEMA_VERSION, RunSpec, TrainConfig, run_id_of
from calbench.validation import check_like_default

TOP_KEYS = ("name", "description", "seeds", "datasets", "backbones", "methods", "train", "posthoc",
            "overrides")
DATASET_KEYS = ("name", "root", "options", "backbones")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "multistep", "cosine")
TRAIN_TYPES = {f.name: f.type for f in fields(TrainConfig)}
__all__ = ["SCHEMA_VERSION", "RunSpec", "TrainConfig", "run_id_of", "Recipe", "load_recipe",
           "parse_recipe", "expand", "filter_specs"]


@dataclass
class Recipe:
    """A validated recipe; `cells` are (method name, {hparam: value or sweep list}) in recipe order."""

    path: str
    name: str
    seeds: list[int]
    datasets: list[dict[str, Any]]          # {"name", "root", "options"}
    backbones: list[tuple[str, dict[str, Any]]]
    methods: list[tuple[str, dict[str, Any]]]
    train: dict[str, Any]
    posthoc: list[str]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


# ----------------------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: str) -> str:
    """${VAR} / $VAR from the environment; an unset variable is left as is (reported by the root check)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1) or m.group(2), m.group(0)), value)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
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
                node[part] = _parse_value(value)
                break
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            if isinstance(node[part], str) and isinstance(node, list):
                # `- digits` / `- ce` written as a bare name: widen it so an option can be set
                node[part] = {"name": node[part]} if parts[0] == "datasets" else {node[part]: {}}
            node = node[part]
    return raw


def _err(path: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}")


def _name_and_options(item: Any, path: str, key: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, opts = next(iter(item.items()))
        if opts is None:
            opts = {}
        if not isinstance(name, str) or not isinstance(opts, dict):
            raise _err(path, key, "expected a name or {name: {option: value}}")
        return name, dict(opts)
    raise _err(path, key, f"expected a name or {{name: {{option: value}}}}, got {item!r}")


def _check_train(train: Any, path: str, key: str = "train") -> dict[str, Any]:
    """Validate a (partial) train mapping; returns it with canonical types and schedule fields."""
    if train is None:
        return {}
    if not isinstance(train, dict):
        raise _err(path, key, f"expected a mapping, got {train!r}")
    out: dict[str, Any] = {}
    for k, v in train.items():
        if k == "schedule":
            out.update(_check_schedule(v, path, f"{key}.schedule"))
            continue
        if k not in TRAIN_TYPES:
            raise _err(path, f"{key}.{k}", f"unknown key{did_you_mean(k, list(TRAIN_TYPES))}; "
                                           f"valid: schedule, {', '.join(TRAIN_TYPES)}")
        out[k] = _check_train_value(k, v, path, f"{key}.{k}")
    return out


def _check_train_value(k: str, v: Any, path: str, key: str) -> Any:
    default = getattr(TrainConfig(), k)
    if isinstance(default, tuple):        # milestones: a list of epochs
        default = (0,)
    v = check_like_default(v, default, f"{path}: {key}")
    if isinstance(default, bool):
        return v
    if isinstance(default, int) and (v < 0 or (k in ("epochs", "batch_size", "eval_batch_size") and v < 1)):
        raise _err(path, key, f"must be positive, got {v}")
    if isinstance(default, float) and v < 0:
        raise _err(path, key, f"must be >= 0, got {v}")
    if k == "optimizer" and v not in OPTIMIZERS:
        raise _err(path, key, f"unknown optimizer {v!r}{did_you_mean(str(v), list(OPTIMIZERS))}; "
                              f"valid: {', '.join(OPTIMIZERS)}")
    return v


def _check_schedule(v: Any, path: str, key: str) -> dict[str, Any]:
    """'none' | 'cosine' | {multistep: [40, 60], gamma: 0.1} | {cosine: {}}"""
    if isinstance(v, str) or v is None:
        kind = v or "none"
        if kind not in SCHEDULES:
            raise _err(path, key, f"unknown schedule {kind!r}{did_you_mean(str(kind), list(SCHEDULES))}; "
                                  f"valid: {', '.join(SCHEDULES)}")
        if kind == "multistep":
            raise _err(path, key, "multistep needs its milestones: {multistep: [40, 60], gamma: 0.1}")
        return {"schedule": kind}
    if not isinstance(v, dict):
        raise _err(path, key, f"expected a name or a mapping, got {v!r}")
    kinds = [k for k in v if k in SCHEDULES]
    extra = [k for k in v if k not in SCHEDULES and k != "gamma"]
    if len(kinds) != 1 or extra:
        raise _err(path, key, f"expected one of {', '.join(SCHEDULES)} (plus gamma), got {sorted(v)}")
    kind = kinds[0]
    out: dict[str, Any] = {"schedule": kind}
    if kind == "multistep":
        out["milestones"] = _check_train_value("milestones", v[kind], path, f"{key}.multistep")
    if "gamma" in v:
        out["gamma"] = _check_train_value("gamma", v["gamma"], path, f"{key}.gamma")
    return out


def _check_method(name: str, hparams: dict[str, Any], path: str, key: str) -> None:
    """Unknown method / hyper-parameter / wrong type -> ConfigError naming file and key."""
    from calbench.methods import check_hparams

    for values in itertools.product(*[v if isinstance(v, list) else [v] for v in hparams.values()]):
        try:
            check_hparams(name, dict(zip(hparams, values)))
        except CalbenchError as err:
            raise _err(path, key, str(err)) from None


def _check_backbone_options(name: str, options: dict[str, Any], path: str, key: str) -> None:
    """Option names of a calbench backbone against its factory's signature (timm models: at build)."""
    import inspect

    from calbench.models import BACKBONES, DATASET_HINTS

    if name not in BACKBONES:
        return
    params = inspect.signature(BACKBONES.get(name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k in params if k not in ("num_classes", "task")]
    for opt, value in options.items():
        if opt not in params and opt not in DATASET_HINTS:
            raise _err(path, f"{key}.{opt}", f"unknown option for backbone {name}{did_you_mean(str(opt), valid)}; "
                                             f"valid: {', '.join(valid) or 'none'}")
        if opt in params:
            check_like_default(value, params[opt].default, f"{path}: {key}.{opt}")


def load_recipe(path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; raises ConfigError with the file and the key."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML: {where}{problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with keys {', '.join(TOP_KEYS)}")
    raw = apply_sets(raw, sets, path)
    return parse_recipe(raw, path)


def parse_recipe(raw: dict[str, Any], path: str = "<recipe>") -> Recipe:
    from calbench.data import DATASETS, dataset_options
    from calbench.posthoc import POSTHOC
    from calbench.models import is_backbone

    for key in raw:
        if key not in TOP_KEYS:
            raise _err(path, str(key), f"unknown key{did_you_mean(str(key), list(TOP_KEYS))}; "
                                       f"valid: {', '.join(TOP_KEYS)}")
    for key in ("name", "datasets", "backbones", "methods"):
        if key not in raw:
            raise _err(path, key, "missing (required)")
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise _err(path, "name", f"expected a simple name (letters, digits, '_', '-', '.'), got {name!r}")

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise _err(path, "seeds", f"expected a list of integers, got {seeds!r}")

    datasets = []
    if not isinstance(raw["datasets"], list) or not raw["datasets"]:
        raise _err(path, "datasets", "expected a non-empty list")
    for i, item in enumerate(raw["datasets"]):
        key = f"datasets[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise _err(path, key, "expected a name or {name: ..., root: ..., options: {...}}")
        unknown = set(item) - set(DATASET_KEYS)
        if unknown:
            bad = str(sorted(map(str, unknown))[0])
            raise _err(path, f"{key}.{bad}", f"unknown key{did_you_mean(bad, list(DATASET_KEYS))}; "
                                             f"valid: {', '.join(DATASET_KEYS)}")
        only_backbones = item.get("backbones")
        if only_backbones is not None and (not isinstance(only_backbones, list)
                                           or not all(isinstance(b, str) for b in only_backbones)):
            raise _err(path, f"{key}.backbones", "expected a list of backbone names")
        ds = item["name"]
        if ds not in DATASETS:
            raise _err(path, f"{key}.name", f"unknown dataset '{ds}'{did_you_mean(str(ds), DATASETS.names())}; "
                                            f"valid: {', '.join(DATASETS.names())}")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise _err(path, f"{key}.options", "expected a mapping")
        valid = dataset_options(ds)
        for opt in options:
            if opt not in valid:
                raise _err(path, f"{key}.options.{opt}", f"unknown option for {ds}{did_you_mean(opt, list(valid))}; "
                                                          f"valid: {', '.join(valid) or 'none'}")
        root = item.get("root")
        if root is not None and not isinstance(root, str):
            raise _err(path, f"{key}.root", f"expected a path, got {root!r}")
        options = {k: expand_env(v) if isinstance(v, str) else v for k, v in options.items()}
        datasets.append({"name": ds, "root": expand_env(root) if root else None, "options": dict(options),
                         "backbones": only_backbones})

    if not isinstance(raw["backbones"], list) or not raw["backbones"]:
        raise _err(path, "backbones", "expected a non-empty list")
    backbones = []
    for i, item in enumerate(raw["backbones"]):
        bb, opts = _name_and_options(item, path, f"backbones[{i}]")
        if not is_backbone(bb):
            from calbench.models import list_backbones
            own = [n for n, _ in list_backbones()]
            raise _err(path, f"backbones[{i}]", f"unknown backbone '{bb}'{did_you_mean(bb, own)}; valid: "
                                                f"{', '.join(own)} or any timm model name")
        _check_backbone_options(bb, opts, path, f"backbones[{i}].{bb}")
        backbones.append((bb, opts))
    names = [b for b, _ in backbones]
    for i, ds in enumerate(datasets):
        for b in ds["backbones"] or []:
            if b not in names:
                raise _err(path, f"datasets[{i}].backbones", f"'{b}' is not in the recipe's backbones "
                                                             f"({', '.join(names)})")

    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise _err(path, "methods", "expected a non-empty list")
    methods = []
    for i, item in enumerate(raw["methods"]):
        m, hp = _name_and_options(item, path, f"methods[{i}]")
        _check_method(m, hp, path, f"methods[{i}].{m}")
        methods.append((m, hp))

    train = _check_train(raw.get("train"), path)

    posthoc = raw.get("posthoc", ["ts"]) or []
    if isinstance(posthoc, str):
        posthoc = [posthoc]
    if not isinstance(posthoc, list):
        raise _err(path, "posthoc", f"expected a list, got {posthoc!r}")
    for i, p in enumerate(posthoc):
        if p not in POSTHOC:
            raise _err(path, f"posthoc[{i}]", f"unknown post-hoc calibrator '{p}'{did_you_mean(str(p), POSTHOC.names())}; "
                                              f"valid: {', '.join(POSTHOC.names())}")

    overrides = []
    for i, ov in enumerate(raw.get("overrides") or []):
        key = f"overrides[{i}]"
        if not isinstance(ov, dict) or not isinstance(ov.get("match"), dict):
            raise _err(path, key, "expected {match: {dataset|backbone|method: pattern}, train|method|backbone: {...}}")
        for k in ov:
            if k not in ("match", "train", "method", "backbone", "dataset"):
                raise _err(path, f"{key}.{k}", "unknown key; valid: match, train, method, backbone, dataset")
        for k in ov["match"]:
            if k not in ("dataset", "backbone", "method"):
                raise _err(path, f"{key}.match.{k}", "unknown key; valid: dataset, backbone, method")
        entry = {"match": {k: str(v) for k, v in ov["match"].items()},
                 "train": _check_train(ov.get("train"), path, f"{key}.train"),
                 "method": ov.get("method") or {}, "backbone": ov.get("backbone") or {},
                 "dataset": ov.get("dataset") or {}}
        if not isinstance(entry["dataset"], dict):
            raise _err(path, f"{key}.dataset", "expected a mapping of dataset options")
        for ds in datasets:
            if "dataset" in entry["match"] and not fnmatch.fnmatchcase(ds["name"], entry["match"]["dataset"]):
                continue
            valid = dataset_options(ds["name"])
            for opt in entry["dataset"]:
                if opt not in valid:
                    raise _err(path, f"{key}.dataset.{opt}", f"unknown option for {ds['name']}; "
                                                              f"valid: {', '.join(valid) or 'none'}")
        if entry["method"]:
            if not isinstance(entry["method"], dict):
                raise _err(path, f"{key}.method", "expected a mapping of hyper-parameters")
            for hp, value in entry["method"].items():
                if isinstance(value, list):   # a sweep here would be applied after the cells exist
                    raise _err(path, f"{key}.method.{hp}", f"a list (sweep) is not allowed in overrides, "
                                                           f"got {value!r}; sweep in methods: instead")
            if "method" not in entry["match"]:
                raise _err(path, f"{key}.method", "method hyper-parameters need a `method` in match")
            for m, _ in methods:
                if fnmatch.fnmatchcase(m, entry["match"]["method"]):
                    _check_method(m, entry["method"], path, f"{key}.method")
        if not isinstance(entry["backbone"], dict):
            raise _err(path, f"{key}.backbone", "expected a mapping of backbone options")
        for bb, _ in backbones:
            if fnmatch.fnmatchcase(bb, entry["match"].get("backbone", "*")):
                _check_backbone_options(bb, entry["backbone"], path, f"{key}.backbone")
        overrides.append(entry)

    return Recipe(path=path, name=name, seeds=list(seeds), datasets=datasets, backbones=backbones,
                  methods=methods, train=train, posthoc=list(posthoc), overrides=overrides,
                  description=str(raw.get("description", "")))


# ----------------------------------------------------------------------------- expansion

def _sweep(hparams: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(hparams)
    lists = [hparams[k] if isinstance(hparams[k], list) else [hparams[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def _label(method: str, hparams: dict[str, Any]) -> str:
    if not hparams:
        return method
    return f"{method}(" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in hparams.items()) + ")"


def _matching_overrides(recipe: Recipe, dataset: str, backbone: str, method: str) -> list[dict[str, Any]]:
    values = {"dataset": dataset, "backbone": backbone, "method": method}
    hits = [ov for ov in recipe.overrides
            if all(fnmatch.fnmatchcase(values[k], pat) for k, pat in ov["match"].items())]
    return sorted(hits, key=lambda ov: len(ov["match"]))   # stable: later and more specific win


def _method_version(name: str) -> int:
    """The method's version (part of the run identity: a fix that changes results bumps it)."""
    from calbench import methods

    if hasattr(methods, "method_version"):
        return int(methods.method_version(name))
    return int(getattr(methods.METHODS.get(name), "version", 1))


def expand(recipe: Recipe) -> list[RunSpec]:
    """Every run of the matrix in recipe order: dataset, backbone, method cell, seed."""
    from calbench.methods import check_hparams

    specs: list[RunSpec] = []
    origins: list[tuple[int, int, int, int]] = []     # (dataset, backbone, method, seed) indices
    labels: dict[str, int] = {}
    for di, ds in enumerate(recipe.datasets):
        for bi, (bb, bb_opts) in enumerate(recipe.backbones):
            if ds.get("backbones") and bb not in ds["backbones"]:
                continue
            for mi, (method, hp_spec) in enumerate(recipe.methods):
                for cell in _sweep(hp_spec):
                    train = asdict(TrainConfig())
                    train.update(recipe.train)
                    hp, bopts, dopts = dict(cell), dict(bb_opts), dict(ds["options"])
                    for ov in _matching_overrides(recipe, ds["name"], bb, method):
                        train.update(ov["train"])
                        hp.update(ov["method"])
                        bopts.update(ov["backbone"])
                        dopts.update(ov.get("dataset", {}))
                    train["milestones"] = list(train["milestones"])
                    full = check_hparams(method, hp)
                    version = _method_version(method)
                    label = _label(method, cell)
                    order = labels.setdefault(label, len(labels))
                    for si, seed in enumerate(recipe.seeds):
                        origins.append((di, bi, mi, si))
                        spec = RunSpec(recipe=recipe.name, method=method, method_label=label,
                                       hparams=full, dataset=ds["name"], root=ds["root"],
                                       dataset_options=dopts, backbone=bb,
                                       backbone_options=bopts, seed=int(seed), train=train,
                                       posthoc=tuple(recipe.posthoc), method_version=version,
                                       order={"method": order, "dataset": di, "backbone": bi})
                        specs.append(RunSpec(**{**spec.__dict__, "run_id": run_id_of(spec.identity())}))
    _reject_duplicates(recipe, specs, origins)
    return specs


def _reject_duplicates(recipe: Recipe, specs: list[RunSpec], origins: list[tuple[int, int, int, int]]) -> None:
    """Two cells with the same run id would be trained twice into one directory: a recipe error
    naming the repeated entry (a method listed twice, a sweep value repeated, a seed, a dataset)."""
    seen: dict[str, int] = {}
    for i, s in enumerate(specs):
        j = seen.setdefault(s.run_id, i)
        if j == i:
            continue
        (d0, b0, m0, s0), (d1, b1, m1, s1) = origins[j], origins[i]
        if d0 != d1:
            key = f"datasets[{d1}]"
        elif b0 != b1:
            key = f"backbones[{b1}]"
        elif m0 != m1:
            key = f"methods[{m1}]"
        elif s0 != s1:
            key = f"seeds[{s1}]"
        else:
            key = f"methods[{m1}].{s.method}"
        raise ConfigError(f"{recipe.path}: {key}: repeats a run already in the matrix ({s.method_label} on "
                          f"{s.dataset} with {s.backbone}, seed {s.seed}, as {specs[j].method_label})")


def filter_specs(specs: list[RunSpec], pattern: str | None) -> list[RunSpec]:
    """Keep runs whose method label, method, dataset, backbone or run id matches the wildcard."""
    if not pattern:
        return specs
    return [s for s in specs if any(fnmatch.fnmatchcase(v, pattern) for v in
                                    (s.method_label, s.method, s.dataset, s.backbone, s.run_id))]
