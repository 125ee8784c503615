"""`calbench plot <figure>`: the papers' figures from a results directory (headless matplotlib Agg).

The verbs are generated from the figure registry (calbench.report.figures.FIGURES): each takes the
options below plus those its figure declares. Each verb prints the paths it wrote; a damaged run file
is one warning line naming it (the other runs are still drawn); nothing to draw is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import click

COMMON_OPTIONS = (
    click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(),
                 help="Results directory (results/<recipe>/<run id>/)."),
    click.option("--recipe", default=None, help="Recipe name (default: the only one there)."),
    click.option("--filter", "filters", multiple=True, metavar="KEY=PATTERN",
                 help="Keep runs whose method / method_label / dataset / backbone / seed / run_id matches "
                      "(shell wildcards; repeatable)."),
    click.option("-o", "--output", "out_dir", default=None, type=click.Path(file_okay=False),
                 help="Output folder [default: <results>/<recipe>/figures]."),
    click.option("--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True),
)


def warn(message: str) -> None:
    click.echo(f"calbench: warning: {message}", err=True)


def report_damage(results) -> None:
    """One warning line per store file the loader could not use (metrics.json, recipe.json, values)."""
    for path, why in results.corrupt:
        warn(f"{path}: unreadable metrics.json, skipped ({why})")
    for line in results.warnings:
        warn(line)


def set_aside_unusable(results, posthoc) -> None:
    """Mark the finished runs whose predictions.npz cannot be drawn from (or a calibrator in posthoc not
    fitted on) as unusable, one warning line each naming the file; the figure draws the rest."""
    from calbench.report.tidy import drop_unusable

    specs = list(posthoc) if isinstance(posthoc, (tuple, list)) else [posthoc] * bool(posthoc)
    for line in drop_unusable(results, posthoc=specs):
        warn(line)


def draw(name: str, results_dir, recipe, filters, out_dir, fmt, **options) -> None:
    from calbench.report.figures import FIGURES, filter_results
    from calbench.report.tidy import load_results

    results = load_results(results_dir, recipe)
    report_damage(results)
    results = filter_results(results, filters)
    if FIGURES.entry(name).meta.get("needs_predictions", True):
        set_aside_unusable(results, options.get("posthoc"))
    out = Path(out_dir) if out_dir else results.root / results.recipe / "figures"
    for path in FIGURES.get(name)(results, out, fmt, **options):
        click.echo(str(path))


def figure_command(entry) -> click.Command:
    """The `calbench plot <name>` verb of one registered figure."""

    def verb(**kw) -> None:
        draw(entry.name, **kw)

    for option in reversed((*COMMON_OPTIONS, *entry.meta.get("options", ()))):
        verb = option(verb)
    help_text = entry.description + (f" ({entry.paper})" if entry.paper else "")
    return click.command(entry.name, help=help_text, short_help=entry.description)(verb)


class FigureGroup(click.Group):
    """A group whose subcommands are the registered figures, built when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from calbench.report.figures import FIGURES

        return sorted(FIGURES.names())   # alphabetical, whatever order the modules imported each other in

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from calbench.report.figures import FIGURES

        return figure_command(FIGURES.entry(name)) if name in FIGURES else None


@click.group("plot", cls=FigureGroup)
def plot() -> None:
    """Draw the papers' figures from a results directory (PNG, PDF or SVG)."""
