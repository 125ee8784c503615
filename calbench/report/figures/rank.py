"""Critical-difference diagrams (Demsar, JMLR 7, 2006, Fig. 1-2): each method's average rank over the
dataset x backbone cells (or cells x seeds), with Nemenyi's critical difference drawn as a bar and thick
lines joining the methods whose average ranks differ by less than it (not significantly different).
The ranks and tests are those of `calbench report --rank` (calbench.report.ranking), one figure per metric."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from calbench.errors import InputError
from calbench.registry import unknown_name_message
from calbench.report.figures.base import done_runs, figure, posthoc_option, pyplot, save, slug
from calbench.report.ranking import OVER, MetricRanking, rank_results
from calbench.report.tables import metric_display
from calbench.report.tidy import Results, parse_posthoc


def metric_list(ctx, param, text: str) -> tuple[str, ...]:
    """`--metrics ece,acc` -> ("ece", "acc"); an unknown key is a one-line InputError."""
    from calbench.metrics import METRICS

    keys = tuple(k.strip() for k in str(text).split(",") if k.strip())
    if not keys:
        raise InputError("--metrics: no metric given")
    for key in keys:
        if key not in METRICS:
            raise InputError("--metrics: " + unknown_name_message("metric", key, list(METRICS)))
    return keys


def cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of the sorted average ranks with ranks[j] - ranks[i] < cd (Demsar's thick lines)."""
    out: list[tuple[int, int]] = []
    for i in range(len(ranks)):
        j = max(t for t in range(i, len(ranks)) if ranks[t] - ranks[i] < cd) if np.isfinite(cd) else i
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return out


def _label_side(ax, names, ranks, k: int, left: bool, top: float) -> None:
    """Lines from each method's rank on the axis down to its name, best on the left, worst on the right."""
    for n, (name, rank) in enumerate(zip(names, ranks)):
        y = top - 0.45 * (n + 1)
        end = 0.6 if left else k + 0.4
        ax.plot([rank, rank, end], [0, y, y], color="black", lw=0.8)
        ax.text(end - 0.05 if left else end + 0.05, y, f"{name} ({rank:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)


def draw_cd(plt, m: MetricRanking, alpha: float, title: str):
    """The figure of one metric's ranking."""
    k = len(m.methods)
    mean = m.mean_ranks
    names = sorted(mean, key=lambda n: (mean[n], n))
    ranks = [mean[n] for n in names]
    half = (k + 1) // 2
    fig, ax = plt.subplots(figsize=(7.0, 1.6 + 0.23 * half * 2))
    ax.plot([1, k], [0, 0], color="black", lw=1)
    for t in range(1, k + 1):
        ax.plot([t, t], [0, 0.1], color="black", lw=1)
        ax.text(t, 0.18, str(t), ha="center", va="bottom", fontsize=8)
    cd = m.critical_difference(alpha)
    if np.isfinite(cd):
        ax.plot([1, 1 + cd], [0.75, 0.75], color="black", lw=1.5)
        ax.plot([1, 1], [0.68, 0.82], color="black", lw=1)
        ax.plot([1 + cd, 1 + cd], [0.68, 0.82], color="black", lw=1)
        ax.text(1 + cd / 2, 0.85, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    bars = cliques(ranks, cd)
    for n, (i, j) in enumerate(bars):
        y = -0.15 - 0.12 * n
        ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="#c0392b", lw=3, solid_capstyle="round")
    top = -0.15 - 0.12 * len(bars)
    _label_side(ax, names[:half], ranks[:half], k, True, top)
    _label_side(ax, names[half:][::-1], ranks[half:][::-1], k, False, top)
    ax.set_xlim(-1.6 if k > 2 else -0.6, k + 2.6 if k > 2 else k + 1.6)
    ax.set_ylim(top - 0.45 * (max(half, k - half) + 1), 1.2)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    return fig


def _title(results: Results, m: MetricRanking, over: str, what: str) -> str:
    test = (f"Friedman p = {m.friedman[1]:.3g}" if m.friedman else m.friedman_note.split(" (")[0])
    return (f"{results.recipe}: {metric_display(m.key)[0]} ({what}), average rank over {len(m.blocks)} "
            f"{'cell' if over == 'cells' else 'cell x seed'} block(s); {test}")


@figure("rank", paper="Demsar, JMLR 2006, Fig. 1", options=[
    click.option("--metrics", default="acc,ece,aece", show_default=True, callback=metric_list,
                 help="Comma-separated metric keys, one diagram each."),
    click.option("--over", type=click.Choice(OVER), default="cells", show_default=True,
                 help="Blocks: dataset x backbone cells (mean over seeds) or cells x seeds."),
    click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
                 show_default=True, help="Significance level of the Nemenyi critical difference."),
    click.option("--all-configs", is_flag=True, help="Rank every configuration of a swept method "
                                                     "(default: the one selected on validation)."),
    posthoc_option(multiple=False, help="Rank the predictions after this calibrator."),
])
def rank(results: Results, out_dir: Path, fmt: str = "png", metrics=("acc", "ece", "aece"), over: str = "cells",
         alpha: float = 0.05, all_configs: bool = False, posthoc=None, **_) -> list[Path]:
    """Critical-difference diagrams: average ranks across cells with Nemenyi's critical difference."""
    plt = pyplot()
    posthoc = parse_posthoc(posthoc) if posthoc else None
    done_runs(results, "rank")
    rankings = rank_results(results, keys=metrics, over=over, posthoc=posthoc, all_configs=all_configs, alpha=alpha)
    what = f"test after {posthoc.label}" if posthoc else "test"
    paths = []
    for m in rankings[0].metrics:
        if len(m.methods) < 2 or not m.blocks:
            continue
        fig = draw_cd(plt, m, alpha, _title(results, m, over, what))
        paths.append(save(fig, out_dir, slug("rank", m.key, over, *([posthoc.label] if posthoc else [])), fmt))
    if not paths:
        raise InputError(f"nothing to plot for rank: no dataset x backbone cell where two or more methods all have "
                         f"finished runs in {results.root / results.recipe}")
    return paths
