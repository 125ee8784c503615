"""What every figure module shares: the FIGURES registry, run filters, grouping, and saving.

A figure is a function draw(results, out_dir, fmt, **options) -> list[Path] registered with
`@figure(name, paper=..., options=[click.option(...), ...])`; `calbench plot <name>` is generated
from that registration (the options become the verb's options, the docstring its help). A figure
raises InputError (one line) when the results hold nothing it can draw.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace
from pathlib import Path

import click

from calbench.errors import InputError
from calbench.registry import Registry
from calbench.report.tidy import Results, Run

FIGURES: Registry = Registry("figure")
FILTER_KEYS = ("method", "method_label", "dataset", "backbone", "seed", "run_id")


def figure(name: str, *, paper: str = "", options=(), needs_predictions: bool = True):
    """Register draw(results, out_dir, fmt, **options) as figure `name`. options: click.option(...)
    decorators, applied to the generated `calbench plot <name>` verb in the order given.
    needs_predictions: the figure reads predictions.npz (so `plot` first sets aside runs whose file is
    unusable, one warning line each)."""

    def add(draw):
        FIGURES.register(name, draw, paper=paper, options=tuple(options), needs_predictions=needs_predictions)
        return draw

    return add


class PosthocParam(click.ParamType):
    """NAME or NAME:KEY=VALUE[:KEY=VALUE...] with NAME a registered post-hoc calibrator (the choices
    come from calbench.posthoc.POSTHOC) -> a PosthocSpec; a bad value is a one-line error."""

    name = "posthoc"

    def get_metavar(self, param, ctx=None) -> str:
        from calbench.posthoc import POSTHOC

        return "[" + "|".join(POSTHOC.names()) + "][:KEY=VALUE]"

    def convert(self, value, param, ctx):
        from calbench.report.tidy import PosthocSpec, parse_posthoc

        return value if isinstance(value, PosthocSpec) else parse_posthoc(str(value))


def posthoc_option(*, multiple: bool, help: str):
    """The `--posthoc` option of a figure: calibrators refitted on each run's saved validation predictions."""
    return click.option("--posthoc", type=PosthocParam(), multiple=multiple, default=() if multiple else None,
                        help=help)


def parse_filters(items) -> list[tuple[str, str]]:
    """'key=pattern' strings (shell wildcards) -> [(key, pattern)]; InputError on a bad one."""
    out = []
    for item in items or ():
        key, sep, pattern = str(item).partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise InputError(f"--filter '{item}': expected KEY=PATTERN with KEY one of {', '.join(FILTER_KEYS)}")
        out.append((key, pattern.strip()))
    return out


def filter_results(results: Results, filters) -> Results:
    """Keep the runs matching every filter (same key given twice: either pattern)."""
    filters = parse_filters(filters)
    if not filters:
        return results
    by_key: dict = {}
    for key, pattern in filters:
        by_key.setdefault(key, []).append(pattern)

    def keep(run: Run) -> bool:
        return all(any(fnmatch.fnmatchcase(str(getattr(run, k)), p) for p in pats) for k, pats in by_key.items())

    return replace(results, runs=[r for r in results.runs if keep(r)], missing=[], corrupt=[])


def done_runs(results: Results, figure: str) -> list[Run]:
    runs = results.done
    if not runs:
        raise InputError(f"nothing to plot for {figure}: no finished runs in {results.root / results.recipe}"
                         " (after --filter)")
    return runs


def by_group(results: Results, runs: list[Run]) -> dict:
    """{(dataset, backbone): {method label: [runs sorted by seed]}} in recipe order."""
    out: dict = {}
    order = {m: i for i, m in enumerate(results.methods())}
    for g in results.groups():
        methods = {}
        for label in sorted({r.method_label for r in runs if r.group == g}, key=lambda m: order.get(m, 1e9)):
            methods[label] = sorted((r for r in runs if r.group == g and r.method_label == label), key=lambda r: r.seed)
        if methods:
            out[g] = methods
    return out


def slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.=-]+", "-", str(p)).strip("-") for p in parts)


def save(fig, out_dir: Path, name: str, fmt: str) -> Path:
    """Write fig to out_dir/name.fmt and close it."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.{fmt}"
    fig.savefig(path, format=fmt, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
