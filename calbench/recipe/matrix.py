"""Matrix expansion: one `RunSpec` per dataset x backbone x method cell x seed, in recipe order.

A list-valued hyper-parameter sweeps (one cell per value; several lists give their product).
Two cells with the same run id would train twice into one directory, so they are a recipe error.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import asdict
from typing import Any

from calbench.errors import ConfigError
from calbench.recipe.common import Recipe
from calbench.recipe.overrides import matching_overrides
from calbench.specs import RunSpec, TrainConfig, run_id_of


def _sweep(hparams: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(hparams)
    lists = [hparams[k] if isinstance(hparams[k], list) else [hparams[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def _label(method: str, hparams: dict[str, Any]) -> str:
    if not hparams:
        return method
    return f"{method}(" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in hparams.items()) + ")"


def method_version(name: str) -> int:
    """The method's version (part of the run identity: a fix that changes results bumps it)."""
    from calbench import methods

    if hasattr(methods, "method_version"):
        return int(methods.method_version(name))
    return int(getattr(methods.METHODS.get(name), "version", 1))


def _cell_settings(recipe: Recipe, ds: dict[str, Any], bb: tuple[str, dict], method: str,
                   cell: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    """(train, hparams, backbone options, dataset options) of one cell, overrides applied."""
    train = asdict(TrainConfig())
    train.update(recipe.train)
    hp, bopts, dopts = dict(cell), dict(bb[1]), dict(ds["options"])
    for ov in matching_overrides(recipe, ds["name"], bb[0], method):
        train.update(ov["train"])
        hp.update(ov["method"])
        bopts.update(ov["backbone"])
        dopts.update(ov.get("dataset", {}))
    train["milestones"] = list(train["milestones"])
    return train, hp, bopts, dopts


def _cells(recipe: Recipe):
    """(dataset index, dataset, backbone index, backbone, method index, method, swept cell)."""
    for di, ds in enumerate(recipe.datasets):
        for bi, bb in enumerate(recipe.backbones):
            if ds.get("backbones") and bb[0] not in ds["backbones"]:
                continue
            for mi, (method, hp_spec) in enumerate(recipe.methods):
                for cell in _sweep(hp_spec):
                    yield di, ds, bi, bb, mi, method, cell


def expand(recipe: Recipe) -> list[RunSpec]:
    """Every run of the matrix in recipe order: dataset, backbone, method cell, seed."""
    from calbench.methods import check_hparams

    specs: list[RunSpec] = []
    origins: list[tuple[int, int, int, int]] = []     # (dataset, backbone, method, seed) indices
    labels: dict[str, int] = {}
    for di, ds, bi, bb, mi, method, cell in _cells(recipe):
        train, hp, bopts, dopts = _cell_settings(recipe, ds, bb, method, cell)
        label = _label(method, cell)
        common = dict(recipe=recipe.name, method=method, method_label=label,
                      hparams=check_hparams(method, hp), method_version=method_version(method),
                      dataset=ds["name"], root=ds["root"], dataset_options=dopts, backbone=bb[0],
                      backbone_options=bopts, train=train, posthoc=tuple(recipe.posthoc),
                      evaluate=tuple(ds.get("evaluate") or ()), keep_weights=recipe.keep_weights,
                      order={"method": labels.setdefault(label, len(labels)), "dataset": di, "backbone": bi})
        for si, seed in enumerate(recipe.seeds):
            origins.append((di, bi, mi, si))
            spec = RunSpec(seed=int(seed), **common)
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
        key = _repeated_key(origins[j], origins[i], s.method)
        raise ConfigError(f"{recipe.path}: {key}: repeats a run already in the matrix ({s.method_label} on "
                          f"{s.dataset} with {s.backbone}, seed {s.seed}, as {specs[j].method_label})")


def _repeated_key(first: tuple[int, int, int, int], again: tuple[int, int, int, int], method: str) -> str:
    """The recipe key of the later of two entries that give the same run."""
    for name, a, b in zip(("datasets", "backbones", "methods", "seeds"), first, again):
        if a != b:
            return f"{name}[{b}]"
    return f"methods[{again[2]}].{method}"


def filter_specs(specs: list[RunSpec], pattern: str | None) -> list[RunSpec]:
    """Keep runs whose method label, method, dataset, backbone or run id matches the wildcard."""
    if not pattern:
        return specs
    return [s for s in specs if any(fnmatch.fnmatchcase(v, pattern) for v in
                                    (s.method_label, s.method, s.dataset, s.backbone, s.run_id))]
