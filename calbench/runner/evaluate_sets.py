"""Evaluation sets of a finished run: what is missing, and evaluating only that.

Layout, beside the run (nothing of the training record is touched: history.jsonl, predictions.npz
and metrics.json stay byte-identical):

    <run>/model.pt                 final weights (calbench.engine.shift_eval)
    <run>/eval/<set id>.npz        labels (int64; -1 for OOD), id, kind, storage, and either
                                   logits (float16, storage "full") or compact rows (storage "compact":
                                   "<calibration>.<field>", calbench.shift.storage)
    <run>/eval/<set id>.json       {"id", "kind", "entry", "n", "num_classes", "storage", "metrics": ...}
                                   written last: the set is done. metrics, from the float32 logits:
                                   shift: {"test": {...}, "test_<calibrator>": {...}} (every default metric)
                                   ood:   {<calibration>: {<score>: {auroc, aupr_in, aupr_out, fpr95}}}
                                          against the clean test set, raw ("none") and after each calibrator
    <run>/eval/index.json          {entry key: [set ids]}: which recipe entries are complete

Storage (calbench.shift.storage.choose_storage; `storage: full|compact|auto` in the recipe's
`evaluate:` block, default auto): float16 logits, 2 bytes per class per sample (+ 8 for the label),
unless that exceeds 2 GB / the run's number of sets; then compact rows (112 bytes per sample
with TS). Figures per run in docs/shift.md: 20 MB for the 95 generated digits sets, 190 MB for
CIFAR-100-C in full; ImageNet-C would need 7.5 GB in full and is stored compact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from calbench.runner.store import save_npz_atomic, write_json_atomic
from calbench.specs import RunSpec

EVAL_DIR = "eval"
INDEX = "index.json"


def entry_key(entry: dict[str, Any]) -> str:
    """What identifies a recipe entry's sets: name and options (not the root: moving data is no change)."""
    return json.dumps({"name": entry["name"], "options": entry.get("options") or {}}, sort_keys=True)


def set_paths(directory: Path, set_id: str) -> tuple[Path, Path]:
    base = Path(directory) / EVAL_DIR
    return base / f"{set_id}.npz", base / f"{set_id}.json"


def read_index(directory: Path) -> dict[str, list[str]]:
    try:
        index = json.loads((Path(directory) / EVAL_DIR / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def missing_entries(spec: RunSpec, directory: Path) -> list[dict[str, Any]]:
    """The recipe's evaluation entries not complete in `directory` (cheap: reads small files only)."""
    index, missing = read_index(directory), []
    for entry in spec.evaluate:
        ids = index.get(entry_key(entry))
        if ids is None or not all(set_paths(directory, i)[1].exists() for i in ids):
            missing.append(entry)
    return missing


def _clean_predictions(spec: RunSpec, directory: Path) -> dict:
    from calbench.engine.shift_eval import fit_on_clean

    with np.load(Path(directory) / "predictions.npz", allow_pickle=False) as data:
        clean = {k: data[k] for k in ("val_logits", "val_labels", "test_logits", "test_labels")}
    clean["calibrators"] = fit_on_clean((clean["val_logits"], clean["val_labels"]), spec.posthoc)
    return clean


def _arrays(eval_set, logits, labels, clean, storage: str) -> dict:
    """The npz arrays of one set: float16 logits (full) or compact rows (calbench.shift.storage)."""
    from calbench.shift.storage import calibrated_sets, compact_arrays

    arrays = {"labels": labels, "id": np.array(eval_set.id), "kind": np.array(eval_set.kind),
              "storage": np.array(storage)}
    if storage == "full":
        return {**arrays, "logits": logits.astype(np.float16)}
    sets = calibrated_sets(logits, clean["calibrators"], clean["val_logits"].shape[1])
    return {**arrays, **compact_arrays(labels, sets, labelled=eval_set.kind != "ood")}


def _evaluate_one(spec: RunSpec, directory: Path, entry: dict, eval_set, model, device, clean,
                  sets_in_run: int) -> str:
    """Predict, store and record one set; returns its storage mode."""
    from calbench.engine.shift_eval import ood_blocks, predict_set, shift_blocks
    from calbench.shift.storage import choose_storage

    logits, labels = predict_set(model, eval_set, spec, device)
    storage = choose_storage(entry.get("storage", "auto"), *logits.shape, sets_in_run)
    npz, record = set_paths(directory, eval_set.id)
    save_npz_atomic(npz, **_arrays(eval_set, logits, labels, clean, storage))
    if eval_set.kind == "ood":
        metrics = ood_blocks(logits, clean["test_logits"], clean["calibrators"])
    else:
        metrics = shift_blocks(logits, labels, clean["calibrators"], clean["val_logits"].shape[1])
    write_json_atomic(record, {"id": eval_set.id, "kind": eval_set.kind, "source": eval_set.source,
                               "family": eval_set.family, "severity": eval_set.severity,
                               "entry": {"name": entry["name"], "options": entry.get("options") or {}},
                               "n": int(labels.shape[0]), "num_classes": int(logits.shape[1]),
                               "storage": storage, "metrics": metrics})
    return storage


def evaluate_missing(spec: RunSpec, directory: str | Path, device: str = "cpu") -> int:
    """Evaluate every missing evaluation set of a finished run from its model.pt; returns how many
    sets were evaluated. Raises FileNotFoundError when the run kept no weights."""
    import torch

    from calbench.engine.build import configure_threads
    from calbench.engine.shift_eval import WEIGHTS_NAME, build_sets, load_model

    directory = Path(directory)
    entries = missing_entries(spec, directory)
    if not entries:
        return 0
    if not (directory / WEIGHTS_NAME).exists():
        raise FileNotFoundError(f"{directory / WEIGHTS_NAME}: no saved weights to evaluate "
                                f"(the run finished with keep_weights: false); delete the run to retrain it")
    dev = torch.device(device)
    configure_threads(dev)
    bundle, model = load_model(spec, directory, dev)
    clean, index, done = _clean_predictions(spec, directory), read_index(directory), 0
    built = {entry_key(e): build_sets(e, bundle) for e in entries}
    sets_in_run = sum(len(built.get(entry_key(e), index.get(entry_key(e), ()))) for e in spec.evaluate)
    for entry in entries:
        sets = built[entry_key(entry)]
        for eval_set in sets:
            if not set_paths(directory, eval_set.id)[1].exists():
                _evaluate_one(spec, directory, entry, eval_set, model, dev, clean, sets_in_run)
                done += 1
        index[entry_key(entry)] = [s.id for s in sets]
        write_json_atomic(directory / EVAL_DIR / INDEX, index)
    return done
