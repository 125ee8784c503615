"""Reliability diagrams with confidence histograms: a grid of methods for one dataset/backbone, before
and after post-hoc calibration (CALS Figure 4 shows temperature scaling). Predictions of all done seeds
of a cell are pooled. Calibrators are refitted on each run's saved validation predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calbench.metrics import compute_metrics, reliability_bins
import click

from calbench.report.figures.base import by_group, done_runs, figure, posthoc_option, pyplot, save, slug
from calbench.report.tidy import Results, load_predictions, parse_posthoc


def pooled(runs, posthoc) -> tuple[np.ndarray, dict]:
    """(labels, {"logits": ...} or {"probs": ...}) of the runs' test predictions, concatenated."""
    preds = [load_predictions(r, "test", posthoc) for r in runs]
    kind = "probs" if "probs" in preds[0] else "logits"
    return np.concatenate([p["labels"] for p in preds]), {kind: np.concatenate([p[kind] for p in preds])}


def top_confidence(scores: dict) -> np.ndarray:
    """The winning class's probability per sample, from logits (softmax) or probabilities."""
    if "probs" in scores:
        return scores["probs"].max(1)
    logits = scores["logits"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).max(1)


def draw_panel(ax_rel, ax_hist, labels, scores: dict, bins: int, title: str) -> None:
    """Accuracy per confidence bin (bars), the gap to the diagonal, and the share of samples per bin.
    With several seeds the predictions are pooled, so the ECE shown is that of the pooled set (the
    table's cell is the mean of the per-seed ECEs instead)."""
    rb = reliability_bins(labels, bins=bins, **scores)
    m = compute_metrics(labels, bins=bins, keys=("acc", "ece"), **scores)
    edges = rb["edges"]
    width, left = np.diff(edges), edges[:-1]
    centers = left + width / 2
    acc = np.nan_to_num(rb["accuracy"])
    conf = np.where(rb["count"] > 0, rb["confidence"], centers)
    ax_rel.bar(left, acc, width=width, align="edge", color="#3b75af", edgecolor="black", lw=0.5, label="accuracy")
    ax_rel.bar(left, np.where(rb["count"] > 0, conf - acc, 0), bottom=acc, width=width, align="edge",
               color="#d62728", alpha=0.35, edgecolor="#d62728", hatch="//", lw=0.5, label="gap")
    ax_rel.plot([0, 1], [0, 1], "--", color="red", lw=1)
    ax_rel.set(xlim=(0, 1), ylim=(0, 1))
    ax_rel.set_title(title, fontsize=8)
    ax_rel.text(0.04, 0.93, f"ECE {100 * m['ece']:.2f}\nAcc {100 * m['acc']:.2f}", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    share = rb["count"] / max(1, rb["count"].sum())
    ax_hist.bar(left, share, width=width, align="edge", color="gray", edgecolor="black", lw=0.5)
    ax_hist.axvline(top_confidence(scores).mean(), color="black", ls="--", lw=1)
    ax_hist.axvline(m["acc"], color="#3b75af", ls="-", lw=1)
    ax_hist.set(xlim=(0, 1), xlabel="confidence")
    ax_rel.set_xticklabels([])


def states_of(methods: dict, posthoc) -> list:
    """The rows of the figure: raw, then each asked calibrator; by default raw and temperature scaling
    when every run stored a fitted temperature (as the paper's figure shows)."""
    if posthoc:
        return [None, *(parse_posthoc(p) for p in posthoc)]
    stored = all(r.temperature for runs in methods.values() for r in runs)
    return [None] + ([parse_posthoc("ts")] if stored else [])


@figure("reliability", paper="CALS Figure 4", options=[
    click.option("--bins", type=click.IntRange(min=2), default=15, show_default=True,
                 help="Confidence bins (Figure 4 of CALS uses 25)."),
    click.option("--cols", type=click.IntRange(min=1), default=6, show_default=True, help="Methods per grid row."),
    posthoc_option(multiple=True, help="Also draw the predictions after this calibrator (repeatable) "
                                       "[default: ts when every run stored a temperature]."),
])
def reliability(results: Results, out_dir: Path, fmt: str = "png", bins: int = 15, cols: int = 6,
                posthoc=(), **_) -> list[Path]:
    """Reliability diagrams + confidence histograms: a grid of methods per dataset/backbone, raw and calibrated."""
    plt = pyplot()
    paths = []
    for group, methods in by_group(results, done_runs(results, "reliability")).items():
        states = states_of(methods, posthoc)
        n = len(methods)
        cols = min(n, max(1, int(cols)))
        grid_rows = -(-n // cols)
        fig = plt.figure(figsize=(2.4 * cols + 0.6, 3.6 * grid_rows * len(states)), layout="constrained")
        subfigs = fig.subfigures(len(states), 1, squeeze=False)[:, 0]
        first = None
        for i, state in enumerate(states):
            axes = subfigs[i].subplots(2 * grid_rows, cols, squeeze=False, gridspec_kw={"height_ratios": [3, 1] * grid_rows})
            first = first if first is not None else axes[0, 0]
            for j in range(n, grid_rows * cols):  # unused slots of the last grid row
                axes[2 * (j // cols), j % cols].set_visible(False)
                axes[2 * (j // cols) + 1, j % cols].set_visible(False)
            for j, (label, runs) in enumerate(methods.items()):
                labels, scores = pooled(runs, state)
                seeds = f"{len(runs)} seeds pooled" if len(runs) > 1 else f"seed {runs[0].seed}"
                title = f"{label}" + (f" + {state.label}" if state else "") + f"\n({seeds})"
                row, col = 2 * (j // cols), j % cols
                draw_panel(axes[row, col], axes[row + 1, col], labels, scores, bins, title)
                if col == 0:
                    axes[row, col].set_ylabel("accuracy")
                    axes[row + 1, col].set_ylabel("share")
        first.legend(loc="lower right", fontsize=6)
        fig.suptitle(f"{results.recipe}: {group[0]} / {group[1]} (test, {bins} bins)")
        paths.append(save(fig, out_dir, slug("reliability", group[0], group[1], f"{bins}bins"), fmt))
    return paths
