"""Evaluation: logits of a whole split, the validation summary of each epoch, and the final metric
blocks (test, val and one `test_<name>` block per post-hoc calibrator fitted on validation).

Conventions (bins, splits, logits vs probabilities): docs/metrics.md. Calibrators are fitted on
validation predictions only and scored exactly as `calbench report --posthoc` refits them
(`calbench.posthoc.calibrated_scores`), so a stored block equals its refit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from calbench.engine.batches import Split, autocast, shard, to_device
from calbench.specs import TrainConfig

PIXELS_PER_IMAGE = 4096  # segmentation: pixel rows kept per image in saved predictions


def flatten_pixels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) -> at most PIXELS_PER_IMAGE seeded random non-ignored pixel rows per image."""
    k = logits.shape[1]
    out_l, out_y = [], []
    for b in range(logits.shape[0]):
        rows = logits[b].reshape(k, -1).T
        ys = labels[b].reshape(-1)
        keep = torch.nonzero(ys != ignore_index).squeeze(1)
        if keep.numel() > PIXELS_PER_IMAGE:
            keep = keep[torch.randperm(keep.numel(), generator=generator)[:PIXELS_PER_IMAGE]].sort().values
        out_l.append(rows[keep])
        out_y.append(ys[keep])
    return torch.cat(out_l), torch.cat(out_y)


def _confusion_cells(logits: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Confusion counts (K*K, label * K + prediction) of one batch's non-ignored pixels."""
    k = logits.shape[1]
    keep = y != ignore_index
    return torch.bincount(y[keep] * k + logits.argmax(1)[keep], minlength=k * k)


def _gather_confusion(counts, confusion: torch.Tensor, dist) -> None:
    counts = torch.zeros_like(confusion) if counts is None else counts.cpu().to(confusion.dtype)
    if dist is not None and dist.world_size > 1:
        counts = dist.gather_rows(counts.unsqueeze(0)).sum(0)
    confusion.copy_(counts)


@torch.no_grad()
def predict(model: nn.Module, split: Split, cfg: TrainConfig, device: torch.device, task: str,
            ignore_index: int, dist=None, seed: int = 0,
            confusion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels of a whole split, in split order, gathered over ranks.

    Segmentation: the rows are a seeded subsample of pixels (PIXELS_PER_IMAGE per image); when
    `confusion` (K*K int64, zeros) is given it is filled with the confusion counts of ALL
    non-ignored pixels (label * K + prediction, summed over ranks) for an exact mIoU.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    segmentation = task == "segmentation"
    all_logits, all_labels, counts = [], [], None
    for x, y in split.batches(shard(len(split), dist), cfg.eval_batch_size):
        x, y = to_device(x, device, cfg), y.to(device, non_blocking=True)
        with autocast(device, cfg):
            logits = model(x)
        logits = logits.float()
        if segmentation:
            if confusion is not None:
                cells = _confusion_cells(logits, y, ignore_index)
                counts = cells if counts is None else counts + cells
            logits, y = flatten_pixels(logits.cpu(), y.cpu(), ignore_index, gen)
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
    logits = torch.cat(all_logits) if all_logits else torch.zeros(0)
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.long)
    if confusion is not None and segmentation:
        _gather_confusion(counts, confusion, dist)
    if dist is not None and dist.world_size > 1:
        logits, labels = dist.gather_rows(logits), dist.gather_rows(labels)
    return logits, labels.long()


def miou(confusion: torch.Tensor) -> float:
    """Mean IoU of a flattened K*K confusion matrix (docs/metrics.md)."""
    from calbench.metrics.segmentation import miou_from_confusion

    k = int(round(confusion.numel() ** 0.5))
    return float(miou_from_confusion(confusion.double().reshape(k, k).numpy()))


def val_summary(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The validation accuracy, ECE and NLL of one epoch, for its history line."""
    from calbench.metrics import compute_metrics

    if logits.shape[0] == 0:
        return {}
    m = compute_metrics(labels.numpy(), logits=logits.numpy(), keys=("acc", "ece", "nll"))
    return {f"val_{k}": float(v) for k, v in m.items()}


def posthoc_block(name: str, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  test_miou: float | None) -> tuple[dict[str, float], Any]:
    """(test metric block, fitted calibrator) of calibrator `name` fitted on validation.

    Segmentation (`test_miou` given): a calibrator that preserves every row's arg-max keeps the
    exact mIoU over all pixels; one that may move it gets the mIoU of the saved pixel rows."""
    from calbench.metrics import compute_metrics
    from calbench.posthoc import calibrated_scores, fit_calibrator

    (val_logits, val_labels), (test_logits, test_labels) = val, test
    calibrator = fit_calibrator(name, val_logits.astype(np.float64), val_labels)
    scores, kind = calibrated_scores(calibrator, test_logits)
    block = compute_metrics(test_labels, **{kind: scores})
    if test_miou is not None:
        block["miou"] = test_miou if calibrator.preserves_argmax else \
            compute_metrics(test_labels, **{kind: scores}, keys=("miou",))["miou"]
    return block, calibrator


def final_metrics(posthoc: tuple[str, ...], val: tuple[torch.Tensor, torch.Tensor],
                  test: tuple[torch.Tensor, torch.Tensor],
                  confusions: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[dict, float | None, dict]:
    """(metrics, temperature, extra) of a finished run.

    metrics: "test", "val" and "test_<name>" per calibrator; segmentation (`confusions` = (val,
    test) pixel counts): calibration metrics on the saved pixel rows and mIoU exact over every
    non-ignored pixel. extra["posthoc"]: every calibrator's state by name; extra["conventions"]: the
    estimator settings of the blocks; temperature: ts's T."""
    from calbench.metrics import compute_metrics
    from calbench.metrics.conventions import metric_conventions

    val_np = (val[0].numpy(), val[1].numpy())
    test_np = (test[0].numpy(), test[1].numpy())
    metrics = {"test": compute_metrics(test_np[1], logits=test_np[0]),
               "val": compute_metrics(val_np[1], logits=val_np[0])}
    if confusions is not None:
        metrics["val"]["miou"], metrics["test"]["miou"] = miou(confusions[0]), miou(confusions[1])
    temperature, states = None, {}
    for name in posthoc:
        test_miou = metrics["test"]["miou"] if confusions is not None else None
        metrics[f"test_{name}"], calibrator = posthoc_block(name, val_np, test_np, test_miou)
        states[name] = calibrator.state()
        if name == "ts":
            temperature = float(calibrator.state()["params"]["temperature"])
    extra: dict[str, Any] = {"posthoc": states} if states else {}
    # the estimator settings of every block above (bins, binning, scope, scale): docs/metrics.md
    extra["conventions"] = metric_conventions(tuple(metrics["test"]), 15)
    if confusions is not None:
        extra["pixel_rows_per_image"] = PIXELS_PER_IMAGE
        extra["miou_pixels"] = ("all non-ignored pixels (test, val and calibrators that keep the arg-max); "
                                "saved pixel rows otherwise")
    return metrics, temperature, extra
