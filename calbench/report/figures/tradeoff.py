"""ECE against accuracy per method with bootstrap interval bars, one panel per dataset/backbone (CALS Fig. 1).
Points are means over seeds; bars the two-level (several seeds) or sample-level percentile intervals."""

from __future__ import annotations

from pathlib import Path

import click

from calbench.report.figures.base import done_runs, figure, posthoc_option, pyplot, save, slug
from calbench.report.intervals import compute_cells
from calbench.report.tidy import Results, parse_posthoc


MARKERS = "osD^vP*Xhp<>"  # with tab20's paired colours, neighbouring methods still differ


@figure("tradeoff", paper="CALS Figure 1", options=[
    click.option("--bootstrap", "B", type=click.IntRange(min=0), default=1000, show_default=True,
                 help="Bootstrap resamples for the interval bars (0: none)."),
    click.option("--ci", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
                 show_default=True, help="Interval coverage."),
    click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed."),
    posthoc_option(multiple=False, help="Plot the predictions after this calibrator."),
])
def tradeoff(results: Results, out_dir: Path, fmt: str = "png", B: int = 1000, seed: int = 0, ci: float = 0.95,
             posthoc=None, **_) -> list[Path]:
    """ECE (y, x100) vs accuracy (x, x100) per method with interval bars; one panel per group."""
    plt = pyplot()
    posthoc = parse_posthoc(posthoc) if posthoc else None
    done_runs(results, "tradeoff")
    cells = compute_cells(results, keys=("acc", "ece"), posthoc=posthoc, B=B, seed=seed, ci=ci)
    groups = [g for g in results.groups() if any(k[1] == g for k in cells)]
    methods = results.methods()
    colors = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(groups), figsize=(4.8 * len(groups), 4.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for i, label in enumerate(methods):
            cell = cells.get((label, g))
            if cell is None:
                continue
            p, c = cell.estimate.point, cell.estimate.ci
            x, y = 100 * p["acc"], 100 * p["ece"]
            xerr = yerr = None
            if c is not None:
                xerr = [[x - 100 * c["acc"][0]], [100 * c["acc"][1] - x]]
                yerr = [[max(0.0, y - 100 * c["ece"][0])], [max(0.0, 100 * c["ece"][1] - y)]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=MARKERS[i % len(MARKERS)], color=colors(i % colors.N),
                        capsize=3, label=label)
        ax.set(xlabel="accuracy (%)", ylabel="ECE (%)", title=f"{g[0]} / {g[1]}")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    what = f"test after {posthoc.label}" if posthoc else "test"
    fig.suptitle(f"{results.recipe}: ECE vs accuracy ({what}; {int(round(ci * 100))}% intervals)")
    fig.tight_layout()
    return [save(fig, out_dir, slug("tradeoff", *([posthoc.label] if posthoc else [])), fmt)]
