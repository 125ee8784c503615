"""Run specifications: how one run is trained (`TrainConfig`), one cell of the matrix for one seed
(`RunSpec`) and its identity (`run_id_of`).

These live at the bottom layer so that the engine, the runner and the recipe parser all import
them without the engine depending on the YAML parser. A run's id hashes everything its result
depends on (see `RunSpec.identity`); not the dataset root (moving the data does not invalidate
results), nor the results directory, nor --jobs/--gpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

# 2: the identity gained the method's version and lost the post-hoc list (calibrators are fitted
# on a run's saved predictions, so adding one must not retrain).
SCHEMA_VERSION = 2

@dataclass(frozen=True)
class TrainConfig:
    """How one run is trained; every field can be set in `train:` or with --set train.<field>=..."""

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "none"               # none | multistep | cosine
    milestones: tuple[int, ...] = ()     # epochs at which multistep multiplies lr by gamma
    gamma: float = 0.1
    amp: bool = True                     # bfloat16 autocast (CUDA only; ignored on the CPU)
    channels_last: bool = True           # CUDA only
    grad_clip: float = 0.0               # max gradient norm; 0 = off
    num_workers: int = 2                 # DataLoader workers for on-disk datasets
    eval_batch_size: int = 512
    meta_fraction: float = 0.1           # meta-validation share of train (methods with a meta step)
    world_size: int = 1                  # data-parallel processes (set by --gpus-per-run; the global
                                         # batch is world_size x batch_size, so it is part of the run id)
    data_on_device: str = "auto"         # auto | on | off: images decoded once and cropped on the device
                                         # (auto: CUDA, small datasets); bit-equal batches, not in the run id


# train fields that never change a result (tested bit-equal), left out of the run identity
EXECUTION_ONLY = ("data_on_device",)


TRAIN_TYPES = {f.name: f.type for f in fields(TrainConfig)}


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix for one seed: everything needed to train it, JSON-able."""

    recipe: str
    method: str
    method_label: str
    hparams: dict[str, Any]
    dataset: str
    root: str | None
    dataset_options: dict[str, Any]
    backbone: str
    backbone_options: dict[str, Any]
    seed: int
    train: dict[str, Any]
    posthoc: tuple[str, ...]
    order: dict[str, int]
    method_version: int = 1
    run_id: str = ""
    # not part of the identity: evaluation sets run on a finished run's saved weights (model.pt)
    evaluate: tuple = ()                 # ({"name", "kind", "root", "options"}, ...)
    keep_weights: bool = True            # keep model.pt beside a finished run

    def identity(self) -> dict[str, Any]:
        """Everything the trained result depends on (the run id hashes this). Not the post-hoc
        list (fitted later on saved predictions), not the dataset root nor evaluation sets."""
        return {"schema": SCHEMA_VERSION, "method": self.method, "method_version": self.method_version,
                "hparams": self.hparams, "dataset": self.dataset, "dataset_options": self.dataset_options,
                "backbone": self.backbone, "backbone_options": self.backbone_options,
                "seed": self.seed,
                "train": {k: v for k, v in self.train.items() if k not in EXECUTION_ONLY}}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["posthoc"] = list(self.posthoc)
        d["evaluate"] = [dict(e) for e in self.evaluate]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        d["posthoc"] = tuple(d.get("posthoc", ()))
        d["evaluate"] = tuple(d.get("evaluate", ()))
        return cls(**d)

    @property
    def train_config(self) -> TrainConfig:
        t = dict(self.train)
        t["milestones"] = tuple(t.get("milestones", ()))
        return TrainConfig(**t)


def run_id_of(identity: dict[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of the identity's canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
