"""A metric against a swept hyper-parameter (default margin) per method and penalty, on validation and test
(CALS Figure 3c). Values are the runs' metrics.json (equal to the recomputation from predictions, tested),
means over seeds; a series needs at least two distinct values of the parameter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import click

from calbench.errors import InputError
from calbench.registry import unknown_name_message
from calbench.report.figures.base import done_runs, figure, pyplot, save, slug
from calbench.report.tidy import Results


def series_name(label: str, param: str) -> str:
    """The method label without its `param=value` setting: 'cals-alm(penalty=p2,margin=5)' with
    param 'margin' -> 'cals-alm(penalty=p2)', so every other setting (penalty, weight) keeps its own line."""
    name = re.sub(rf"(?<=[(,]){re.escape(param)}=[^,()]*,?", "", label)
    return name.replace(",)", ")").replace("()", "")


def series(runs, param: str) -> dict:
    """{(group, series name): {param value: [runs]}} for runs whose hparams carry a numeric param."""
    out: dict = {}
    for r in runs:
        value = r.hparams.get(param)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = series_name(r.method_label, param)
        out.setdefault((r.group, name), {}).setdefault(float(value), []).append(r)
    return {k: v for k, v in out.items() if len(v) >= 2}


def shown_in_percent() -> dict[str, bool]:
    """{metric key: whether figures show it x100}, from the metric registry (its compatibility view
    METRIC_INFO where the registry is not installed)."""
    try:
        from calbench.metrics import METRICS
    except ImportError:
        from calbench.metrics import METRIC_INFO
        return {key: bool(info["percent"]) for key, info in METRIC_INFO.items()}
    return {key: bool(METRICS.get(key).percent) for key in METRICS.names()}


def metric_keys(ctx, param, text: str) -> tuple[str, ...]:
    """`--metrics ece,acc` -> ("ece", "acc"); an unknown key is a one-line InputError."""
    keys = tuple(k.strip() for k in str(text).split(",") if k.strip())
    valid = list(shown_in_percent())
    if not keys:
        raise InputError("--metrics: no metric given")
    for key in keys:
        if key not in valid:
            raise InputError("--metrics: " + unknown_name_message("metric", key, valid))
    return keys


@figure("ablation", paper="CALS Figure 3c", needs_predictions=False, options=[
    click.option("--param", default="margin", show_default=True, help="The swept hyper-parameter (in hparams)."),
    click.option("--metrics", default="ece,acc", show_default=True, callback=metric_keys,
                 help="Comma-separated metric keys (rows)."),
])
def ablation(results: Results, out_dir: Path, fmt: str = "png", param: str = "margin",
             metrics=("ece", "acc"), **_) -> list[Path]:
    """A metric vs a swept hyper-parameter per method/penalty, on val and test (rows: metrics, x100 where percent)."""
    plt = pyplot()
    swept = series(done_runs(results, "ablation"), param)
    percent = shown_in_percent()
    if not swept:
        raise InputError(f"nothing to plot for ablation: no method was run with two or more values of "
                         f"'{param}' in {results.root / results.recipe}")
    paths = []
    for group in sorted({g for g, _ in swept}, key=results.groups().index):
        fig, axes = plt.subplots(len(metrics), 2, figsize=(8.5, 2.9 * len(metrics)), squeeze=False)
        for (g, name), by_value in swept.items():
            if g != group:
                continue
            xs = sorted(by_value)
            for i, key in enumerate(metrics):
                for j, split in enumerate(("val", "test")):
                    ys = [np.mean([r.metrics.get(split, {}).get(key, np.nan) for r in by_value[x]]) for x in xs]
                    pct = percent[key]
                    axes[i, j].plot(xs, (100 if pct else 1) * np.array(ys), marker="o", label=name)
                    axes[i, j].set(xlabel=param, ylabel=key + (" (%)" if pct else ""), title=f"{key} on {split}")
                    axes[i, j].grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{results.recipe}: {group[0]} / {group[1]}: effect of {param}")
        fig.tight_layout()
        paths.append(save(fig, out_dir, slug("ablation", param, group[0], group[1]), fmt))
    return paths
