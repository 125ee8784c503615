"""`calbench evaluate PRED.npz`: every metric of a predictions file, optionally with bootstrap intervals."""

from __future__ import annotations

import json
import os
import zipfile

import click

from calbench.errors import InputError

# (labels key, scores key, kind): the documented layout first, then the run store's predictions.npz
LAYOUTS = (("labels", "logits", "logits"), ("labels", "probs", "probs"),
           ("test_labels", "test_logits", "logits"), ("test_labels", "test_probs", "probs"))


def load_predictions(path: str) -> dict:
    """Read labels and logits or probs from an npz; InputError naming the problem otherwise."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected an .npz file")
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not an npz file ({type(err).__name__})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not an npz file (a single .npy array)")
    with data:
        names = set(data.files)
        if "logits" in names and "probs" in names:
            raise InputError(f"{path}: holds both 'logits' and 'probs'; keep exactly one")
        for lkey, skey, kind in LAYOUTS:
            if lkey in names and skey in names:
                try:
                    return {"labels": data[lkey], kind: data[skey]}
                except (ValueError, OSError, zipfile.BadZipFile) as err:
                    raise InputError(f"{path}: cannot read arrays ({err})") from None
    have = ", ".join(sorted(names)) or "nothing"
    raise InputError(f"{path}: missing keys: expected 'labels' and 'logits' or 'probs' "
                     f"(or test_labels and test_logits), found {have}")


def _table(result: dict, ci: dict | None, level: float, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from calbench.metrics import METRIC_INFO

    table = Table(title=title, title_justify="left")
    for col in ("metric", "value", "unit"):
        table.add_column(col)
    if ci:
        table.add_column(f"{level:.0%} CI")
    for key, value in result.items():
        scale, unit = (100.0, "%") if METRIC_INFO[key]["percent"] else (1.0, "nats" if key == "nll" else "")
        row = [f"{key} ({METRIC_INFO[key]['name']})", f"{value * scale:.3f}", unit]
        if ci:
            lo, hi = ci[key]
            row.append(f"[{lo * scale:.3f}, {hi * scale:.3f}]")
        table.add_row(*row)
    Console().print(table)


@click.command("evaluate")
@click.argument("pred", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions) instead of a table.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ece/mce/cece/aece.")
@click.option("--bootstrap", "B", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap resamples for percentile intervals (0: none; 1000 is usual).")
@click.option("--ci", "level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Interval coverage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed.")
@click.option("--ignore-index", type=int, default=None, help="Label value to drop (segmentation, e.g. 255).")
def evaluate(pred: str, as_json: bool, bins: int, B: int, level: float, seed: int, ignore_index: int | None) -> None:
    """Compute the calibration metrics of PRED.npz.

    PRED.npz holds `labels` (N,) and `logits` or `probs` (N, K); segmentation (N, H, W) with
    (N, K, H, W). The run store's predictions.npz (test_labels, test_logits) is accepted too.
    """
    from calbench import metrics

    arrays = load_predictions(pred)
    try:
        if B:
            res = metrics.bootstrap_metrics(arrays.pop("labels"), **arrays, B=B, seed=seed, ci=level, bins=bins,
                                            ignore_index=ignore_index)
            point, ci = res["point"], res["ci"]
        else:
            point, ci = metrics.compute_metrics(arrays.pop("labels"), **arrays, bins=bins,
                                                ignore_index=ignore_index), None
    except InputError as err:
        raise InputError(f"{pred}: {err}") from None
    if as_json:
        out = dict(point)
        if ci:
            out["ci"] = {k: list(v) for k, v in ci.items()}
        click.echo(json.dumps(out))
    else:
        title = f"{pred}" + (f"  (bootstrap B={B}, seed={seed})" if B else "")
        _table(point, ci, level, title)
