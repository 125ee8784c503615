"""Training curves from history.jsonl (CALS Figure 3a/b): validation ECE per epoch per method, and the
CALS multipliers' min / mean / max per epoch. Curves are means over seeds, one figure per group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calbench.errors import InputError
import click

from calbench.report.figures.base import by_group, done_runs, figure, pyplot, save, slug
from calbench.report.tidy import Results

LAMBDA_KEYS = ("lambda_min", "lambda_mean", "lambda_max")


def mean_curve(runs, key: str):
    """(epochs, mean over the seeds that recorded key at that epoch) or None."""
    per_epoch: dict = {}
    for r in runs:
        for row in r.history():
            if row.get(key) is not None and "epoch" in row:
                per_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    if not per_epoch:
        return None
    epochs = sorted(per_epoch)
    return np.array(epochs), np.array([np.mean(per_epoch[e]) for e in epochs])


@figure("curves", paper="CALS Figure 3a, 3b", needs_predictions=False, options=[
    click.option("--metric", default="val_ece", show_default=True, help="history.jsonl key for panel (a)."),
])
def curves(results: Results, out_dir: Path, fmt: str = "png", metric: str = "val_ece", **_) -> list[Path]:
    """Validation ECE (or --metric) per epoch per method, and the CALS multipliers' min / mean / max."""
    plt = pyplot()
    paths = []
    for group, methods in by_group(results, done_runs(results, "curves")).items():
        ece = {label: mean_curve(runs, metric) for label, runs in methods.items()}
        ece = {k: v for k, v in ece.items() if v is not None}
        if not ece:
            continue
        lam = {label: {k: mean_curve(runs, k) for k in LAMBDA_KEYS} for label, runs in methods.items()}
        lam = {label: v for label, v in lam.items() if any(c is not None for c in v.values())}
        fig, axes = plt.subplots(1, 2 if lam else 1, figsize=(10 if lam else 5.2, 3.8), squeeze=False)
        ax = axes[0, 0]
        scale = 100.0 if metric.endswith(("ece", "acc")) else 1.0
        cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        for i, (label, (x, y)) in enumerate(ece.items()):
            ax.plot(x, scale * y, marker="o", ms=3, label=label, color=cmap(i % cmap.N))
        ax.set(xlabel="epoch", ylabel=metric + (" (%)" if scale == 100 else ""), title=f"(a) {metric} per epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        if lam:
            ax = axes[0, 1]
            styles = {"lambda_min": ":", "lambda_mean": "-", "lambda_max": "--"}
            for i, (label, stats) in enumerate(lam.items()):
                for key, curve in stats.items():
                    if curve is not None:
                        ax.plot(*curve, styles[key], color=f"C{i}", label=f"{label} {key.split('_')[1]}")
            ax.set(xlabel="epoch", ylabel="multiplier", title="(b) multipliers (min / mean / max)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{results.recipe}: {group[0]} / {group[1]}")
        fig.tight_layout()
        paths.append(save(fig, out_dir, slug("curves", group[0], group[1]), fmt))
    if not paths:
        raise InputError(f"nothing to plot for curves: no history.jsonl with '{metric}' in "
                         f"{results.root / results.recipe}")
    return paths
