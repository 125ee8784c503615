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
    select: {by: val.ece, subject_to: "val.acc >= ce.val.acc - 1.0"}   # report: swept configurations
    overrides:
      - match: {dataset: 20newsgroups}                # keys: dataset, backbone, method (wildcards)
        train: {optimizer: adam, lr: 1.0e-3}           # and/or method:, backbone:, dataset: {...}

Command line: `--set KEY=VALUE` (repeatable; VALUE parsed as YAML) sets a dotted key, with list
indices where the recipe has a list: `--set train.epochs=2`, `--set seeds=[0]`,
`--set datasets.0.root=/data/x`, `--set methods.1.cals-alm.margin=[5,10]`. `--only PATTERN` keeps
the runs whose method label (`cals-alm(margin=5)`), method, dataset, backbone or run id matches the
shell-style wildcard (fnmatch).

The parts: `loader` (reading the file safely), `sections` (one parser per section), `train`
(the train section), `overrides` (--set, environment variables, `overrides:` entries), `matrix`
(expansion). Run specs and the run identity are in calbench.specs (re-exported here).
"""

from __future__ import annotations

from pathlib import Path

from calbench.errors import ConfigError
from calbench.recipe.common import DATASET_KEYS, TOP_KEYS, Recipe
from calbench.recipe.loader import read_recipe_yaml
from calbench.recipe.matrix import expand, filter_specs
from calbench.recipe.overrides import apply_sets, expand_env
from calbench.recipe.sections import parse_recipe
from calbench.recipe.train import OPTIMIZERS, SCHEDULES, TRAIN_TYPES
from calbench.specs import SCHEMA_VERSION, RunSpec, TrainConfig, run_id_of

__all__ = ["load_recipe", "parse_recipe", "expand", "filter_specs", "Recipe", "apply_sets", "expand_env",
           "RunSpec", "TrainConfig", "run_id_of", "SCHEMA_VERSION", "TOP_KEYS", "DATASET_KEYS",
           "OPTIMIZERS", "SCHEDULES", "TRAIN_TYPES"]


def load_recipe(path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; raises ConfigError with the file and the key."""
    path = str(path)
    raw = read_recipe_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with keys {', '.join(TOP_KEYS)}")
    return parse_recipe(apply_sets(raw, sets, path), path)
