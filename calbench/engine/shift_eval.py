"""Evaluate a finished run on evaluation sets (distribution shift, OOD) from its saved weights.

A finished run keeps its final weights as `model.pt` (the backbone's state_dict, loaded back with
torch.load(weights_only=True)), so an evaluation set added to a recipe later is evaluated without
retraining: the weights are loaded, each set (calbench.shift) is streamed batch by batch and its
logits returned. The runner (calbench.runner.evaluate_sets) stores them; this module never writes
anything but model.pt.

Post-hoc under shift follows the literature's setting (Ovadia et al., NeurIPS 2019): calibrators
are fitted on the CLEAN validation predictions of the run and applied unchanged to every shifted set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from calbench.engine.batches import autocast, to_device
from calbench.engine.checkpoint import save_checkpoint
from calbench.specs import RunSpec

WEIGHTS_NAME = "model.pt"
EVAL_SEED = 0   # one corruption seed for every run, so that every model sees the same images


def save_weights(model: torch.nn.Module, run_dir: str | Path) -> Path:
    """run_dir/model.pt: the final backbone state_dict (atomic: temporary file + rename)."""
    path = Path(run_dir) / WEIGHTS_NAME
    save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return path


def load_model(spec: RunSpec, run_dir: str | Path, device: torch.device):
    """(clean DatasetBundle, backbone with the run's final weights in eval mode)."""
    from calbench.data import create_dataset
    from calbench.models import create_backbone

    bundle = create_dataset(spec.dataset, root=spec.root, seed=spec.seed, **spec.dataset_options)
    options = {**bundle.backbone_options, **spec.backbone_options}
    model = create_backbone(spec.backbone, bundle.num_classes, bundle.task, **options)
    state = torch.load(Path(run_dir) / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return bundle, model.to(device).eval()


def build_sets(entry: dict[str, Any], bundle) -> list:
    """The EvalSets of one recipe entry {"name", "kind", "root", "options"}."""
    from calbench.shift import build_eval_sets

    return build_eval_sets(entry["name"], bundle, root=entry.get("root"), seed=EVAL_SEED,
                           **(entry.get("options") or {}))


@torch.no_grad()
def predict_set(model: torch.nn.Module, eval_set, spec: RunSpec, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 (n, K'), labels int64) of one evaluation set, streamed; K' = the class subset's
    size where the set has one (ImageNet-R/-A: logits restricted to those columns)."""
    cfg = spec.train_config
    logits, labels = [], []
    for x, y in eval_set.batches(cfg.eval_batch_size):
        with autocast(device, cfg):
            out = model(to_device(x, device, cfg))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    z = torch.cat(logits).numpy().astype(np.float32)
    if eval_set.class_subset is not None:
        z = z[:, np.asarray(eval_set.class_subset)]
    return z, torch.cat(labels).numpy().astype(np.int64)


def fit_on_clean(val: tuple[np.ndarray, np.ndarray], posthoc: tuple[str, ...]) -> dict[str, Any]:
    """{name: calibrator fitted on the run's clean validation logits} (fitted once per run)."""
    from calbench.posthoc import fit_calibrator

    return {name: fit_calibrator(name, val[0].astype(np.float64), val[1]) for name in posthoc}


def shift_blocks(logits: np.ndarray, labels: np.ndarray, calibrators: dict[str, Any],
                 num_classes: int) -> dict[str, dict[str, float]]:
    """{"test": metrics, "test_<name>": metrics after each clean-validation calibrator}: every default
    metric from the full float32 logits (the exact point values compact storage keeps)."""
    from calbench.metrics import compute_metrics
    from calbench.shift.storage import calibrated_sets

    sets = calibrated_sets(logits, calibrators, num_classes)
    return {("test" if name == "none" else f"test_{name}"): compute_metrics(labels, **{kind: scores})
            for name, (scores, kind) in sets.items()}


def ood_blocks(out_logits: np.ndarray, in_logits: np.ndarray, calibrators: dict[str, Any] | None = None
               ) -> dict[str, dict[str, dict[str, float]]]:
    """{calibration: {score: {metric: value}}}: the clean test set (in) against the OOD set (out),
    every score, raw ("none") and after each clean-validation calibrator applied to both sets."""
    from calbench.metrics.ood import ood_metrics
    from calbench.shift.storage import calibrated_sets, score_rows

    k = in_logits.shape[1]
    ins = calibrated_sets(in_logits, calibrators or {}, k)
    outs = calibrated_sets(out_logits, calibrators or {}, k)
    blocks = {}
    for name in ins:
        a, b = score_rows(*ins[name]), score_rows(*outs[name])
        blocks[name] = {score: ood_metrics(a[score], b[score]) for score in a}
    return blocks
