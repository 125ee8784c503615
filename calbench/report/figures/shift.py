"""ECE and accuracy against corruption severity per method, before and after temperature scaling
(Ovadia et al., NeurIPS 2019, Figure 2 style): one figure per dataset / backbone, 2 x 2 panels
(rows: accuracy, ECE; columns: no post-hoc, TS fitted on clean validation). Lines are means over
seeds of the mean over corruptions at each severity (calbench.report.shift); bands are its two-level
percentile intervals (seeds, then test samples; with a single seed, test samples only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calbench.errors import InputError
from calbench.report.figures.base import figure, pyplot, save, slug
from calbench.report.shift import split_table
from calbench.report.tidy import Results


def _panel(ax, rows, metric: str, title: str, colors: dict) -> None:
    for method, part in rows[rows["metric"] == metric].groupby("method", sort=False):
        part = part[part["severity"] != "all"].sort_values("severity")
        x = part["severity"].astype(int).to_numpy()
        ax.plot(x, 100 * part["mean"], marker="o", ms=3, label=method, color=colors[method])
        lo, hi = part["lo"].to_numpy(float), part["hi"].to_numpy(float)
        if np.isfinite(lo).all():
            ax.fill_between(x, 100 * lo, 100 * hi, alpha=0.2, color=colors[method])
    ax.set(xlabel="corruption severity", ylabel=f"{'accuracy' if metric == 'acc' else 'ECE'} (%)", title=title)
    ax.grid(alpha=0.3)


@figure("shift", paper="Ovadia et al., NeurIPS 2019, Figure 2", needs_predictions=True)
def shift(results: Results, out_dir: Path, fmt: str = "png", **_) -> list[Path]:
    """Accuracy and ECE vs severity per method (mean over corruptions), before and after TS."""
    plt = pyplot()
    try:
        table = split_table(results, "shift", posthoc=("ts",), B=1000)
    except InputError:     # nothing evaluated under shift: the figure says so
        return [_nothing_to_draw(plt, out_dir, fmt)]
    paths = []
    for (dataset, backbone), rows in table.groupby(["dataset", "backbone"], sort=False):
        methods = list(dict.fromkeys(rows["method"]))
        cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
        colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
        fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), squeeze=False, sharex=True)
        for col, calibration in enumerate(("none", "ts")):
            part = rows[rows["calibration"] == calibration]
            label = "no post-hoc" if calibration == "none" else "TS (fitted on clean validation)"
            _panel(axes[0, col], part, "acc", f"accuracy, {label}", colors)
            _panel(axes[1, col], part, "ece", f"ECE, {label}", colors)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{dataset} / {backbone}: calibration under corruption")
        paths.append(save(fig, out_dir, slug("shift", dataset, backbone), fmt))
    return paths


def _nothing_to_draw(plt, out_dir: Path, fmt: str) -> Path:
    """A figure that says why there is nothing to draw (every registered figure renders on any store)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    text = ("no run has shift evaluations:\nadd `evaluate: {shift: [...]}` to the recipe's datasets\n"
            "and run `calbench run` again (nothing retrains)")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return save(fig, out_dir, "shift", fmt)
