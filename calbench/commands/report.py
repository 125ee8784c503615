"""`calbench report`: the recipe's runs as a Table-1-like table with bootstrap intervals (METRICS.md).

Point estimates and intervals are recomputed from each run's predictions.npz; a recomputed value that
disagrees with the run's metrics.json is warned about (one line per run) rather than hidden.
"""

from __future__ import annotations

import sys

import click

from calbench.errors import InputError

DEFAULT_METRICS = ("acc", "ece", "aece")
TOLERANCE = 1e-6  # fractions; float32 logits divided by a temperature may differ in the last digits


def parse_metrics(text: str | None) -> tuple[str, ...]:
    from calbench.metrics import METRIC_INFO
    from calbench.registry import did_you_mean

    if not text:
        return DEFAULT_METRICS
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    for k in keys:
        if k not in METRIC_INFO:
            raise InputError(f"unknown metric '{k}'{did_you_mean(k, list(METRIC_INFO))}; "
                             f"valid: {', '.join(METRIC_INFO)}")
    if not keys:
        raise InputError("--metrics: no metric given")
    return keys


def warn(message: str) -> None:
    click.echo(f"calbench: warning: {message}", err=True)


def check_recomputed(results, cells, keys, posthoc) -> None:
    """Warn when a point recomputed from predictions.npz differs from the run's metrics.json."""
    from calbench.report.intervals import cell_runs

    split = "test_ts" if posthoc == "ts" else "test"
    for key, runs in cell_runs(results).items():
        cell = cells.get(key)
        if cell is None:
            continue
        for run, point in zip(runs, cell.estimate.per_run):
            stored = run.metrics.get(split, {})
            bad = [k for k in keys if k in stored and stored[k] is not None and abs(stored[k] - point[k]) > TOLERANCE]
            if bad:
                k = bad[0]
                warn(f"{run.run_dir / 'metrics.json'}: {split} {k} recomputed from predictions.npz is "
                     f"{point[k]:.6g}, metrics.json says {stored[k]:.6g}")


def make_report(results_dir: str = "results", recipe: str | None = None, *, keys=DEFAULT_METRICS,
                posthoc: str | None = None, B: int = 1000, ci: float = 0.95, seed: int = 0,
                reference: str | None = None, bins: int = 15, partial: bool = False, on_warning=warn):
    """Load, compute and arrange; returns (ReportTable, Results). Warnings (corrupt files) go to on_warning."""
    from calbench.report.intervals import compute_cells
    from calbench.report.tables import build_table
    from calbench.report.tidy import load_results

    results = load_results(results_dir, recipe)
    for path, why in results.corrupt:
        on_warning(f"{path}: unreadable metrics.json, skipped ({why})")
    if not results.done:
        raise InputError(f"{results.root / results.recipe}: no finished runs to report")
    cells = compute_cells(results, keys=keys, posthoc=posthoc, B=B, seed=seed, ci=ci, bins=bins, reference=reference)
    check_recomputed(results, cells, keys, posthoc)
    ref_label = None
    if reference is not None:
        from calbench.report.intervals import resolve_reference
        ref_label = resolve_reference(results, reference)
    table = build_table(results, cells, keys=keys, ci=ci, reference=ref_label, posthoc=posthoc, partial=partial)
    return table, results


@click.command("report")
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(),
              help="Results directory (results/<recipe>/<run id>/).")
@click.option("--recipe", default=None, help="Recipe name (default: the only one in the results directory).")
@click.option("--metrics", "metrics", default=None, help="Comma-separated metrics [default: acc,ece,aece].")
@click.option("--posthoc", type=click.Choice(["ts"]), default=None,
              help="Report test logits after the run's fitted temperature scaling.")
@click.option("--bootstrap", "B", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples (0: point estimates only).")
@click.option("--ci", "level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Interval coverage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed.")
@click.option("--reference", default=None, help="Method (label or name): paired intervals of differences to it.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ECE-type metrics.")
@click.option("--partial", is_flag=True, help="Show cells with a failed/pending seed as the mean of the rest.")
@click.option("--latex", "fmt", flag_value="latex", help="A booktabs LaTeX table.")
@click.option("--markdown", "fmt", flag_value="markdown", help="A markdown table.")
@click.option("--csv", "fmt", flag_value="csv", help="The tidy table (run x split x metric) as CSV.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
def report(results_dir, recipe, metrics, posthoc, B, level, seed, reference, bins, partial, fmt, output) -> None:
    """Aggregate a recipe's runs into a table like Table 1 of the CALS paper.

    \b
    Rows: methods in recipe order; column groups: dataset / backbone; cells: mean over seeds
    with a bootstrap interval over test samples (two-level across seeds when there are several).
    """
    from calbench.report.tables import print_rich, render_latex, render_markdown, render_text

    keys = parse_metrics(metrics)
    if fmt == "csv":
        from calbench.report.tidy import load_results

        results = load_results(results_dir, recipe)
        for path, why in results.corrupt:
            warn(f"{path}: unreadable metrics.json, skipped ({why})")
        tidy = results.tidy()
        if metrics:
            tidy = tidy[tidy["metric"].isin(keys)]
        text = tidy.to_csv(index=False)
    else:
        table, _ = make_report(results_dir, recipe, keys=keys, posthoc=posthoc, B=B, ci=level, seed=seed,
                               reference=reference, bins=bins, partial=partial)
        if fmt == "latex":
            text = render_latex(table)
        elif fmt == "markdown":
            text = render_markdown(table)
        elif output:
            text = render_text(table)
        else:
            from rich.console import Console

            print_rich(table, Console(width=max(120, 20 + 26 * len(table.groups) * len(keys))))
            return
    if output:
        with open(output, "w") as fh:
            fh.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)
