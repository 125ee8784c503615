"""Evaluation sets beyond the i.i.d. test split: distribution shift and out-of-distribution data.

API (for the recipe, the engine, storage and the report; details in docs/shift.md):

    EVAL_SETS                         Registry("eval set"); entry.meta: kind ("shift"/"ood"), layout
    eval_set_names(kind=None)         registered names, optionally of one kind
    eval_set_options(name)            {option: default} besides clean, root, seed
    check_eval_root(name, root, **o)  cheap validation before anything runs (ConfigError/InputError)
    build_eval_sets(name, clean, root=None, seed=0, **options) -> list[EvalSet]

`clean` is the clean dataset's DatasetBundle (calbench.data.create_dataset); every set is delivered
in the format of `clean.test` (shape, channels, normalisation). An EvalSet has:

    id            stable string: 'shift:<family>:<severity>' (generated), 'shift:<set>:<corruption>:
                  <severity>' (cifar10-c, imagenet-c, ...), 'shift:imagenet-r', 'ood:<name>'
    kind          'shift' (labels are clean labels) or 'ood' (every label is OOD_LABEL = -1)
    source, family, severity (None where the set has none), meta (dict, JSON-able)
    class_subset  None, or the sorted clean class indices to restrict logits to (ImageNet-R/-A);
                  labels then index into class_subset
    chunk_size    generated sets only: a DataLoader batch size that computes each chunk once
    dataset       map-style torch Dataset of (x, y), opened lazily on first use
    batches(batch_size=256, num_workers=0) -> iterator of (x float32, y int64), in order, streaming

Streaming: on-disk sets read files (or memory-mapped rows) per item; generated sets compute one
chunk of the clean test set at a time. Generated corruptions: calbench.shift.corruptions (CORRUPTIONS
registry, corrupt(x, name, severity, generator), generator_for(seed, family, severity, chunk)).
Every set built with the same seed gives identical tensors; pass one fixed seed (e.g. 0) for every
run of a comparison so that all models see the same corrupted images.

Every module of this package registers its sets when imported (a new set is one module), except
`storage`: how a run stores a set's predictions (float16 logits or compact top-label rows).
"""

from __future__ import annotations

import importlib
import pkgutil

from calbench.shift.corruptions import CORRUPTIONS, corrupt, generator_for, profile_for
from calbench.shift.sets import (EVAL_SETS, OOD_LABEL, EvalSet, EvalSetFamily, build_eval_sets, check_eval_root,
                                 eval_set_options)


def eval_set_names(kind: str | None = None) -> list[str]:
    """Registered evaluation-set names (registration order), of one kind ('shift'/'ood') if given."""
    return [e.name for e in EVAL_SETS.entries() if kind is None or e.meta["kind"] == kind]


def _import_every_module() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_every_module()

__all__ = ["CORRUPTIONS", "EVAL_SETS", "OOD_LABEL", "EvalSet", "EvalSetFamily", "build_eval_sets",
           "check_eval_root", "corrupt", "eval_set_names", "eval_set_options", "generator_for", "profile_for"]
