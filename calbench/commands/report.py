"""`calbench report`: the recipe's runs as a Table-1-like table with bootstrap intervals (docs/metrics.md).

Point estimates and intervals are recomputed from each run's predictions.npz; a recomputed value that
disagrees with the run's metrics.json is warned about (one line per run) rather than hidden. Post-hoc
calibrators are refitted from each run's saved validation predictions (`--posthoc`), so any
registered calibrator applies to every finished run. Damaged store files are warned about, one line
each naming the file, and the rest is reported; exit 2 only when nothing usable remains.
"""

from __future__ import annotations

import sys

import click

from calbench.errors import InputError

DEFAULT_METRICS = ("acc", "ece", "aece")
TOLERANCE = 1e-6  # fractions; float32 logits divided by a temperature may differ in the last digits


def metric_keys() -> list[str]:
    """Every metric key, from the metric registry."""
    try:
        from calbench.metrics import METRICS
    except ImportError:  # the metric registry has not landed yet: its compatibility view
        from calbench.metrics import METRIC_INFO as METRICS
    return list(METRICS)


def parse_metrics(text: str | None) -> tuple[str, ...]:
    from calbench.registry import did_you_mean

    if not text:
        return DEFAULT_METRICS
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    valid = metric_keys()
    for k in keys:
        if k not in valid:
            raise InputError(f"unknown metric '{k}'{did_you_mean(k, valid)}; valid: {', '.join(valid)}")
    if not keys:
        raise InputError("--metrics: no metric given")
    return keys


def warn(message: str) -> None:
    click.echo(f"calbench: warning: {message}", err=True)


def stored_split(run, spec) -> str | None:
    """The metrics.json block a recomputed cell should equal: "test" for raw predictions; the engine's
    "test_<name>" for a calibrator with default hyper-parameters whose stored state (if any) has the
    calibrator's current version; None when nothing stored is comparable."""
    if spec is None:
        return "test"
    from calbench.posthoc import POSTHOC

    state = run.posthoc_states.get(spec.name) or {}
    if spec.hparams or state.get("version", POSTHOC.get(spec.name).version) != POSTHOC.get(spec.name).version:
        return None
    return spec.split


def check_recomputed(results, cells, keys, spec=None, on_warning=warn) -> None:
    """Warn when a point recomputed from predictions.npz differs from the run's metrics.json."""
    from calbench.report.intervals import cell_runs

    for key, runs in cell_runs(results).items():
        cell = cells.get(key)
        if cell is None:
            continue
        for run, point in zip(runs, cell.estimate.per_run):
            split = stored_split(run, spec)
            stored = run.metrics.get(split, {}) if split else {}
            bad = [k for k in keys if stored.get(k) is not None and abs(stored[k] - point[k]) > TOLERANCE]
            if bad:
                k = bad[0]
                on_warning(f"{run.run_dir / 'metrics.json'}: {split} {k} recomputed from predictions.npz is "
                           f"{point[k]:.6g}, metrics.json says {stored[k]:.6g}")


def usable_results(results_dir, recipe, specs=(), on_warning=warn, *, predictions: bool = True):
    """The recipe's Results after warning (one line each, naming the file) about every damaged file and
    (predictions=True) setting aside runs whose predictions cannot be used for the table or for
    fitting `specs`; InputError when nothing usable remains."""
    from calbench.report.tidy import drop_unusable, load_results

    results = load_results(results_dir, recipe)
    for path, why in results.corrupt:
        on_warning(f"{path}: unreadable metrics.json, skipped ({why})")
    for line in results.warnings:
        on_warning(line)
    had_done = bool(results.done)
    skipped = drop_unusable(results, posthoc=specs) if predictions else []
    where = results.root / results.recipe
    if not results.done and had_done and specs and all("no val_" in line for line in skipped):
        raise InputError(f"{where}: no run has validation predictions (val_logits, val_labels in "
                         f"predictions.npz) to fit --posthoc {','.join(s.label for s in specs)} on")
    if not results.done:
        first = f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""
        raise InputError(f"{where}: no finished runs to report{first}")
    for line in skipped:
        on_warning(line)
    return results


def make_report(results_dir: str = "results", recipe: str | None = None, *, keys=DEFAULT_METRICS,
                posthoc=None, B: int = 1000, ci: float = 0.95, seed: int = 0,
                reference: str | None = None, bins: int = 15, partial: bool = False, on_warning=warn,
                select=None, all_configs: bool = False, interval: str | None = None):
    """Load, compute and arrange; returns (ReportTable, Results). posthoc: None, "ts,vs,hb:bins=10" or a
    list of PosthocSpec; one row block per calibrator ("best": chosen per cell on validation). A swept
    method is one row, its configuration selected on validation (calbench.report.selection; select:
    a criterion overriding the recipe's, all_configs: every configuration). Warnings go to on_warning."""
    from calbench.report import selection as sel
    from calbench.report.intervals import compute_cells, resolve_reference
    from calbench.report.tables import build_table

    specs, best = sel.posthoc_request(posthoc)
    results = usable_results(results_dir, recipe, list(dict.fromkeys(specs + best)), on_warning)
    results, chosen = sel.select_configs(results, select, all_configs=all_configs, bins=bins, on_warning=on_warning)
    ref_label = resolve_reference(results, reference) if reference is not None else None
    blocks = {}
    for spec in specs or ([] if best else [None]):
        cells = compute_cells(results, keys=keys, posthoc=spec, B=B, seed=seed, ci=ci, bins=bins,
                              reference=reference, interval=resolve_interval(interval))
        check_recomputed(results, cells, keys, spec, on_warning)
        blocks[spec.label if spec else None] = cells
    if best:
        blocks[sel.BEST] = sel.best_posthoc_cells(results, best, chosen, keys=keys, B=B, seed=seed, ci=ci, bins=bins,
                                                  reference=reference, interval=resolve_interval(interval))
        sel.save_record(results, chosen)
    if None in blocks:
        table = build_table(results, blocks[None], keys=keys, ci=ci, reference=ref_label, partial=partial)
    else:
        table = build_table(results, keys=keys, ci=ci, reference=ref_label, blocks=blocks, partial=partial)
    table.notes += chosen.notes()
    table.interval, table.B, table.bins = resolve_interval(interval), B, bins
    return table, results


def resolve_interval(interval: str | None) -> str:
    """--interval, checked (one-line InputError); None: the default chosen by measurement (docs/metrics.md)."""
    from calbench.metrics.bootstrap import DEFAULT_INTERVAL, check_interval

    return DEFAULT_INTERVAL if interval is None else check_interval(interval)


class PosthocOption(click.Option):
    """--posthoc, whose help lists the registered calibrators when shown (not at import time)."""

    def get_help_record(self, ctx):
        from calbench.posthoc import POSTHOC

        self.help = ("Refit post-hoc calibrators on each run's saved validation predictions and report the "
                     "test predictions after each, one row block per calibrator (cached beside the run; "
                     f"no retraining). NAME[:KEY=VALUE...], comma-separated; NAME one of: {', '.join(POSTHOC)}; "
                     "or best: per cell the calibrator (of those given, else all) best on a 2-fold split "
                     "of the validation set.")
        return super().get_help_record(ctx)


def tidy_csv(results_dir, recipe, metrics, keys, specs, bins, select=None) -> str:
    """The tidy table as CSV; with calibrators, plus rows of split "posthoc:<label>" recomputed per run;
    the selection on validation as columns `selected`, `selection` and rows of split "selection:val"."""
    import pandas as pd

    from calbench.report.selection import choose_configs, mark_tidy, save_record
    from calbench.report.tidy import posthoc_tidy

    results = usable_results(results_dir, recipe, specs, predictions=bool(specs))
    selection = choose_configs(results, select, bins=bins, on_warning=warn)
    if selection.cells:
        save_record(results, selection)
    tidy = mark_tidy(results.tidy(), selection)
    if specs:
        tidy = pd.concat([tidy, posthoc_tidy(results, specs, keys if metrics else None, bins)], ignore_index=True)
    if metrics:
        tidy = tidy[tidy["metric"].isin(keys) | (tidy["split"] == "selection:val")]
    from calbench.report.tidy import add_conventions

    return add_conventions(tidy, bins).to_csv(index=False)


def paper_text(results_dir, recipe, key, fmt, *, B, ci, seed, bins, partial, select, interval=None) -> str:
    """`--paper KEY`: every cell of the published table beside ours (one row per method, selected on
    validation), as text, markdown or CSV (calbench.report.papers)."""
    from calbench.report import papers
    from calbench.report.selection import select_configs

    papers.paper_table(key)  # a wrong key is one line before anything is read
    results = usable_results(results_dir, recipe)
    results, selection = select_configs(results, select, bins=bins, on_warning=warn)
    items = papers.compare(results, key, B=B, seed=seed, ci=ci, bins=bins, partial=partial, interval=interval)
    if fmt == "csv":
        return papers.render_csv(items)
    render = papers.render_markdown if fmt == "markdown" else papers.render_text
    return render(items, key, ci, selection.notes())


def rank_text(results_dir, recipe, over, fmt, output, **options) -> str | None:
    """`--rank [cells|seeds]`: per metric, each method's average rank over the dataset x backbone cells (or
    cells x seeds), the Friedman test and Holm-adjusted pairwise Wilcoxon tests (calbench.report.ranking)
    of the report table's point estimates; printed (None returned) or as text, markdown or CSV."""
    from calbench.report import ranking

    if fmt == "latex":
        raise InputError("--rank: no LaTeX form; use --markdown or --csv")
    table, _ = make_report(results_dir, recipe, B=0, **options)
    rankings = ranking.rank_table(table, over=over)
    if fmt == "csv":
        return ranking.to_csv(rankings)
    if fmt == "markdown":
        return ranking.render_markdown(rankings)
    if output:
        return ranking.render_text(rankings)
    from rich.console import Console

    ranking.print_rich(rankings, Console(width=max(160, 60 + 40 * len(table.keys))))
    return None


def html_report(path, results_dir, recipe, *, posthoc, **options) -> None:
    """`--html PATH`: one self-contained HTML file (calbench.report.html) with the run summary, the i.i.d.
    table, a post-hoc table (the --posthoc calibrators, else those the runs stored test_<name> blocks for),
    the stored splits, the rankings, every figure that can be drawn, the selection record and the metric
    conventions. Each warning is printed once."""
    from calbench.report import html, ranking

    seen: set = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    tables = [make_report(results_dir, recipe, on_warning=once, **options)[0]]
    full = usable_results(results_dir, recipe, on_warning=once)
    calibrators = posthoc or ",".join(html.stored_calibrators(full))
    if calibrators:
        tables.append(make_report(results_dir, recipe, posthoc=calibrators, on_warning=once, **options)[0])
    rankings = [r for t in tables for r in ranking.rank_table(t)]
    size = html.write_html(path, full, tables, rankings, options=options, on_warning=once)
    click.echo(f"wrote {path} ({size / 1e6:.2f} MB)", err=True)


@click.command("report")
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(),
              help="Results directory (results/<recipe>/<run id>/).")
@click.option("--recipe", default=None, help="Recipe name (default: the only one in the results directory).")
@click.option("--metrics", "metrics", default=None, help="Comma-separated metrics [default: acc,ece,aece].")
@click.option("--posthoc", cls=PosthocOption, default=None, metavar="NAME[,NAME...]")
@click.option("--bootstrap", "B", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples (0: point estimates only).")
@click.option("--ci", "level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Interval coverage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed.")
@click.option("--reference", default=None, help="Method (label or name): paired intervals of differences to it.")
@click.option("--interval", default=None, metavar="percentile|basic|bca",
              help="Bootstrap interval kind [default: the one closest to nominal coverage in the study of "
                   "docs/metrics.md].")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ECE-type metrics.")
@click.option("--partial", is_flag=True, help="Show cells with a failed/pending seed as the mean of the rest.")
@click.option("--latex", "fmt", flag_value="latex", help="A booktabs LaTeX table.")
@click.option("--markdown", "fmt", flag_value="markdown", help="A markdown table.")
@click.option("--csv", "fmt", flag_value="csv", help="The tidy table (run x split x metric) as CSV.")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write to FILE, not stdout.")
@click.option("--all-configs", is_flag=True, help="Show every configuration of a swept method, not only the "
              "one selected on validation.")
@click.option("--select-by", "select", default=None, metavar="val.METRIC",
              help="Criterion that selects a swept method's configuration on validation, replacing the "
                   "recipe's select: [default: the recipe's, else val.nll].")
@click.option("--rank", type=click.Choice(["cells", "seeds"]), is_flag=False, flag_value="cells", default=None,
              help="Average ranks, Friedman and Holm-adjusted pairwise Wilcoxon tests per metric, blocks over "
                   "dataset x backbone cells (mean over seeds) or, with `--rank seeds`, cells x seeds.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False),
              help="Write one self-contained HTML report (tables, figures, rankings, selection) to PATH.")
@click.option("--paper", default=None, metavar="PAPER:TABLE",
              help="Compare with a published table (cals:table1, ...): ours, the paper's, the difference, "
                   "and whether the paper's value lies inside our interval.")
@click.option("--split", default=None, metavar="shift|ood|SET_ID",
              help="Evaluation sets instead of the test split: shift (cA/cECE/cNLL per severity, before and "
                   "after post-hoc), ood (AUROC/FPR95 per OOD set), or one set id (shift:gaussian_noise:3).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes computing the table cells' bootstraps [default: this machine's cores when the "
                   "work is worth starting them, else 1]; the numbers do not depend on it.")
def report(results_dir, recipe, metrics, posthoc, B, level, seed, reference, bins, partial, fmt, output,
           all_configs, select, paper, rank, html_path, split=None, interval=None, workers=None) -> None:
    """Aggregate a recipe's runs into a table like Table 1 of the CALS paper.

    \b
    Rows: methods in recipe order; column groups: dataset / backbone; cells: mean over seeds
    with a bootstrap interval over test samples (two-level across seeds when there are several).
    """
    from calbench.report.tables import print_rich, render_latex, render_markdown, render_text

    from calbench.commands.evaluate import single_threaded
    from calbench.report.pool import set_workers
    from calbench.report.selection import parse_select, posthoc_request

    single_threaded()  # parallelism comes from the worker processes (report/pool.py), not from BLAS
    set_workers(workers)
    if split is not None:
        from calbench.report.shift import split_text

        return _emit(split_text(results_dir, recipe, split, fmt, posthoc=posthoc, B=B, ci=level, seed=seed,
                                interval=interval), output)
    keys = parse_metrics(metrics)
    interval = resolve_interval(interval)
    specs, best = posthoc_request(posthoc)
    select = None if select is None else parse_select(select, "--select-by")
    if html_path is not None:
        return html_report(html_path, results_dir, recipe, keys=keys, posthoc=posthoc, B=B, ci=level, seed=seed,
                           reference=reference, bins=bins, partial=partial, select=select, all_configs=all_configs,
                           interval=interval)
    if paper is not None:
        text = paper_text(results_dir, recipe, paper, fmt, B=B, ci=level, seed=seed, bins=bins, partial=partial,
                          select=select, interval=interval)
    elif rank is not None:
        text = rank_text(results_dir, recipe, rank, fmt, output, keys=keys, posthoc=posthoc, bins=bins,
                         partial=partial, select=select, all_configs=all_configs)
        if text is None:
            return
    elif fmt == "csv":
        text = tidy_csv(results_dir, recipe, metrics, keys, list(dict.fromkeys(specs + best)), bins, select)
    else:
        table, _ = make_report(results_dir, recipe, keys=keys, posthoc=posthoc, B=B, ci=level, seed=seed,
                               reference=reference, bins=bins, partial=partial, select=select,
                               all_configs=all_configs, interval=interval)
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
    _emit(text, output)


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as fh:
            fh.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)
