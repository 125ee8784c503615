"""`calbench plot reliability|tradeoff|curves|ablation`: the papers' figures from a results directory
(headless matplotlib Agg). Each verb prints the paths it wrote; nothing to draw is a one-line error."""

from __future__ import annotations

import functools
from pathlib import Path

import click


def common(f):
    """Options every figure takes."""
    @click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(),
                  help="Results directory (results/<recipe>/<run id>/).")
    @click.option("--recipe", default=None, help="Recipe name (default: the only one there).")
    @click.option("--filter", "filters", multiple=True, metavar="KEY=PATTERN",
                  help="Keep runs whose method / method_label / dataset / backbone / seed / run_id matches "
                       "(shell wildcards; repeatable).")
    @click.option("-o", "--output", "out_dir", default=None, type=click.Path(file_okay=False),
                  help="Output folder [default: <results>/<recipe>/figures].")
    @click.option("--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True)
    @functools.wraps(f)
    def wrapper(**kw):
        return f(**kw)
    return wrapper


def draw(name: str, results_dir, recipe, filters, out_dir, fmt, **options) -> None:
    from calbench.report.figures import FIGURES, filter_results
    from calbench.report.tidy import load_results

    results = load_results(results_dir, recipe)
    for path, why in results.corrupt:
        click.echo(f"calbench: warning: {path}: unreadable metrics.json, skipped ({why})", err=True)
    results = filter_results(results, filters)
    out = Path(out_dir) if out_dir else results.root / results.recipe / "figures"
    for path in FIGURES.get(name)(results, out, fmt, **options):
        click.echo(str(path))


@click.group("plot")
def plot() -> None:
    """Draw the papers' figures from a results directory (PNG or PDF)."""


@plot.command("reliability")
@common
@click.option("--bins", type=click.IntRange(min=2), default=15, show_default=True,
              help="Confidence bins (Figure 4 of CALS uses 25).")
@click.option("--cols", type=click.IntRange(min=1), default=6, show_default=True, help="Methods per grid row.")
def reliability(**kw) -> None:
    """Reliability diagrams + confidence histograms: methods grid per dataset/backbone, raw and after TS."""
    draw("reliability", **kw)


@plot.command("tradeoff")
@common
@click.option("--bootstrap", "B", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the interval bars (0: none).")
@click.option("--ci", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed.")
@click.option("--posthoc", type=click.Choice(["ts"]), default=None, help="After temperature scaling.")
def tradeoff(**kw) -> None:
    """ECE vs accuracy per method with interval bars (CALS Figure 1)."""
    draw("tradeoff", **kw)


@plot.command("curves")
@common
@click.option("--metric", default="val_ece", show_default=True, help="history.jsonl key for panel (a).")
def curves(**kw) -> None:
    """Validation ECE per epoch per method and CALS multipliers min/mean/max (CALS Figure 3a, 3b)."""
    draw("curves", **kw)


@plot.command("ablation")
@common
@click.option("--param", default="margin", show_default=True, help="The swept hyper-parameter (in hparams).")
@click.option("--metrics", default="ece,acc", show_default=True, help="Comma-separated metrics (rows).")
def ablation(metrics: str, **kw) -> None:
    """A metric vs a swept hyper-parameter per method/penalty, on val and test (CALS Figure 3c)."""
    from calbench.commands.report import parse_metrics

    draw("ablation", metrics=parse_metrics(metrics), **kw)
