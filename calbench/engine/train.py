"""Train and evaluate one run: the protocol every method shares.

- Inner steps on the train split (minus a seeded meta-validation share for methods with a meta
  step); after each epoch the VALIDATION logits drive the method's `end_epoch` (CALS multipliers)
  and the history line; post-hoc calibrators are fitted on validation; test is only evaluated.
- Deterministic on the CPU (calbench.engine.loop): a resumed run equals an uninterrupted one.
- bfloat16 autocast and channels_last only on CUDA (flags `amp`, `channels_last`).
- Checkpoints (calbench.engine.checkpoint) let a killed run resume from its last saved epoch.
- With a DistContext (calbench.engine.distributed) each rank trains on its shard; validation and
  test logits are gathered from all ranks, so adaptive methods see every validation row.

The steps live in their own modules: build (calbench.engine.build), one epoch and its end
(calbench.engine.loop), evaluation (calbench.engine.evaluate); this module runs them in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from calbench.engine import checkpoint, evaluate, loop
from calbench.engine.build import RunParts, build_run, configure_threads
from calbench.engine.evaluate import PIXELS_PER_IMAGE, predict  # noqa: F401 - re-exported
from calbench.engine.loop import NonFiniteLoss, seed_everything
from calbench.engine.shift_eval import save_weights
from calbench.specs import RunSpec

__all__ = ["RunOutput", "NonFiniteLoss", "train_run", "seed_everything", "PIXELS_PER_IMAGE"]


@dataclass
class RunOutput:
    metrics: dict[str, dict[str, float]]
    temperature: float | None
    history: list[dict[str, Any]]
    epochs_done: int
    predictions: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]
    extra: dict[str, Any]


def _check_world(spec: RunSpec, dist) -> None:
    world = dist.world_size if dist is not None else 1
    if world != spec.train_config.world_size:
        raise ValueError(f"run {spec.run_id} is configured for {spec.train_config.world_size} process(es) "
                         f"(train.world_size) but was started with {world}")


def resume(parts: RunParts, path: Path) -> int:
    """Load run_dir's checkpoint into `parts` when it is this run's; returns the first epoch to train."""
    state = checkpoint.load_checkpoint(path, parts.spec.run_id)
    if state is None:
        return 0
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.scheduler is not None and state.get("scheduler"):
        parts.scheduler.load_state_dict(state["scheduler"])
    parts.method.load_state_dict(state["method"])
    parts.history = list(state["history"])
    return int(state["epoch"]) + 1


def _save(parts: RunParts, path: Path, epoch: int) -> None:
    checkpoint.save_checkpoint(path, {
        "run_id": parts.spec.run_id, "epoch": epoch, "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "method": parts.method.state_dict(), "history": parts.history})


def _train_epochs(parts: RunParts, start: int, ckpt_path: Path, is_main: bool, progress, on_epoch):
    """Epochs start..end; returns the last epoch's validation (None when none was trained).
    A checkpoint is saved when the policy says so; `on_epoch(history)` follows each save."""
    policy, val, epochs = checkpoint.CheckpointPolicy(), None, parts.cfg.epochs
    for epoch in range(start, epochs):
        started = time.perf_counter()
        lr, train_loss = loop.train_one_epoch(parts, epoch)
        line, val = loop.end_epoch(parts, epoch, lr, train_loss, started)
        parts.history.append(line)
        if is_main and policy.due():
            _save(parts, ckpt_path, epoch)
            policy.saved()
            if on_epoch is not None:
                on_epoch(parts.history)
        if progress is not None:
            progress(epoch + 1, epochs)
    return val


def _finish(parts: RunParts, val) -> RunOutput:
    """Test predictions, every metric block and post-hoc calibrator, and the saved arrays."""
    b, spec = parts.bundle, parts.spec
    if val is None:   # resumed after the last epoch's checkpoint: evaluate validation again
        val = loop.validate(parts)
    test_confusion = torch.zeros_like(parts.val_confusion)
    test = evaluate.predict(parts.ddp_model, parts.test_set, parts.cfg, parts.dev, b.task, b.ignore_index,
                            parts.dist, seed=spec.seed + 1, confusion=test_confusion)
    confusions = (parts.val_confusion, test_confusion) if b.task == "segmentation" else None
    metrics, temperature, extra = evaluate.final_metrics(spec.posthoc, val, test, confusions)
    predictions = {"test_logits": test[0].numpy().astype(np.float32),
                   "test_labels": test[1].numpy().astype(np.int64),
                   "val_logits": val[0].numpy().astype(np.float32),
                   "val_labels": val[1].numpy().astype(np.int64)}
    if parts.train_class_counts is not None:
        predictions |= long_tail_arrays(spec.dataset, parts.train_class_counts.numpy().astype(np.int64))
    return RunOutput(metrics=metrics, temperature=temperature, history=parts.history,
                     epochs_done=parts.cfg.epochs, predictions=predictions, splits=parts.splits, extra=extra)


def long_tail_arrays(dataset: str, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The train class counts and the dataset's shot thresholds resolved on them, (few_below,
    many_above) as in calbench.metrics.longtail.shot_thresholds_of (digits-lt's terciles become
    numbers), saved beside the predictions so that a report reads the long-tail groups from the
    store alone: looking the thresholds up in the dataset registry imports torch (~1.5 s in every
    report worker process)."""
    from calbench.data import DATASETS
    from calbench.metrics.longtail import shot_thresholds_of

    rule = DATASETS.entry(dataset).meta.get("shot_thresholds") if dataset in DATASETS else None
    return {"train_class_counts": counts,
            "train_shot_thresholds": np.asarray(shot_thresholds_of(counts, rule), dtype=np.float64)}


def train_run(spec: RunSpec, run_dir: str | Path, device: str = "cpu", dist=None,
              progress: Callable[[int, int], None] | None = None,
              on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
              threads: int | None = None) -> RunOutput:
    """Train `spec` and evaluate it; checkpoints to run_dir/checkpoint.pt (main rank only).

    `on_epoch(history)` is called after each saved checkpoint with the history it holds;
    `threads`: torch's intra-op threads on the CPU (default one; see build.configure_threads)."""
    _check_world(spec, dist)
    dev = torch.device(device)
    configure_threads(dev, threads)
    seed_everything(spec.seed, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed input sizes: let cuDNN pick its fastest kernels
    parts = build_run(spec, dev, dist)
    ckpt_path = Path(run_dir) / checkpoint.CHECKPOINT_NAME
    start = resume(parts, ckpt_path)
    is_main = dist is None or dist.is_main
    val = _train_epochs(parts, start, ckpt_path, is_main, progress, on_epoch)
    if is_main and spec.keep_weights:   # evaluation sets added later need no retraining
        save_weights(parts.model, run_dir)
    return _finish(parts, val)
