"""`calbench list methods|posthoc|datasets|eval-sets|backbones|metrics`."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table


def _print(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@click.group("list")
def list_group() -> None:
    """List what calbench knows: methods, post-hoc calibrators, datasets, evaluation sets, backbones, metrics."""


@list_group.command("methods")
def list_methods_cmd() -> None:
    """Every calibration method with a one-line description and its paper."""
    from calbench.methods import METHODS
    from calbench.posthoc import POSTHOC

    rows = [(e.name, "train-time", e.description, e.paper) for e in METHODS.entries()]
    rows += [(e.name, "post-hoc", e.description, e.paper) for e in POSTHOC.entries()]
    _print("methods", rows, ("name", "kind", "description", "paper"))


@list_group.command("posthoc")
def list_posthoc_cmd() -> None:
    """Every post-hoc calibrator: what it outputs, whether it keeps the arg-max, its hyper-parameters
    with their defaults (set them as `--posthoc NAME:key=value`) and its paper."""
    from calbench.posthoc import POSTHOC, calibrator_hparams

    def hparams(name: str) -> str:
        return ", ".join(f"{k}={v}" for k, v in calibrator_hparams(name).items()) or "-"

    rows = [(e.name, e.obj.output, "yes" if e.obj.preserves_argmax else "no", hparams(e.name), e.description, e.paper)
            for e in POSTHOC.entries()]
    _print("post-hoc calibrators", rows, ("name", "output", "keeps arg-max", "hyper-parameters", "description", "paper"))


@list_group.command("eval-sets")
def list_eval_sets_cmd() -> None:
    """Every evaluation set (shift or OOD) a recipe's `evaluate:` block can name, with the on-disk
    layout it reads (docs/shift.md); generated sets need no root."""
    from calbench.shift import EVAL_SETS

    rows = [(e.name, str(e.meta.get("kind", "")), "yes" if e.obj.needs_root else "no (generated)",
             e.description, str(e.meta.get("layout", ""))) for e in EVAL_SETS.entries()]
    _print("evaluation sets", rows, ("name", "kind", "needs root", "description", "layout"))


@list_group.command("datasets")
def list_datasets_cmd() -> None:
    """Every dataset with its task, classes and the on-disk layout it reads."""
    from calbench.data import DATASETS

    rows = [(e.name, str(e.meta.get("task", "")), str(e.meta.get("num_classes", "")),
             e.description, str(e.meta.get("layout", ""))) for e in DATASETS.entries()]
    _print("datasets", rows, ("name", "task", "classes", "description", "layout"))


@list_group.command("backbones")
@click.option("--filter", "pattern", default=None, help="Shell wildcard, e.g. 'resnet*'.")
def list_backbones_cmd(pattern: str | None) -> None:
    """calbench's own backbones and, with --filter, the timm models that match."""
    from calbench.models import list_backbones

    rows = [(name, source) for name, source in list_backbones(pattern)]
    _print("backbones", rows, ("name", "source"))


@list_group.command("metrics")
def list_metrics_cmd() -> None:
    """Every registered metric: key, name, direction, table scale and definition (docs/metrics.md)."""
    from calbench.metrics import METRICS

    rows = [(s.key, s.name, "higher" if s.higher_is_better else "lower", "x100" if s.percent else "as is",
             s.definition + (" (segmentation only)" if s.segmentation_only else ""))
            for s in (e.obj for e in METRICS.entries())]
    _print("metrics", rows, ("key", "name", "better", "shown", "definition"))
