"""`calbench evaluate PRED.npz`: every metric of a predictions file, optionally with bootstrap intervals."""

from __future__ import annotations

import json
import math
import os
import tokenize
import zipfile
import zlib

import click

from calbench.errors import InputError

# (labels key, scores key, kind): the documented layout first, then the run store's predictions.npz
LAYOUTS = (("labels", "logits", "logits"), ("labels", "probs", "probs"),
           ("test_labels", "test_logits", "logits"), ("test_labels", "test_probs", "probs"))


# What np.load / zipfile / zlib raise on a damaged file (the numpy header parser may raise
# SyntaxError or tokenize.TokenError on a mangled header dict).
READ_ERRORS = (ValueError, OSError, EOFError, KeyError, SyntaxError, zipfile.BadZipFile, zlib.error,
               tokenize.TokenError, MemoryError)


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes; physical memory where that file does not exist."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_member(path: str, zf: zipfile.ZipFile, key: str) -> None:
    """Read only the .npy header of member `key` and refuse, before anything is allocated, an array
    whose shape x itemsize exceeds what the member holds or the memory available."""
    import numpy as np

    info = zf.getinfo(key + ".npy")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        offset = f.tell()
    need = math.prod(shape) * dtype.itemsize
    held = info.file_size - offset
    if need > held:
        raise InputError(f"{path}: array '{key}' claims shape {shape} {dtype} ({_size(need)}) but the file "
                         f"holds {_size(max(held, 0))} for it (truncated or corrupted)")
    if need > available_memory():
        raise InputError(f"{path}: array '{key}' needs {_size(need)}, more than the "
                         f"{_size(available_memory())} of memory available")


def load_predictions(path: str, layouts: tuple = LAYOUTS) -> dict:
    """Read labels and logits or probs from an npz; InputError naming the file and the problem
    otherwise (no traceback for a damaged, truncated, empty or oversized file)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected an .npz file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file, expected an .npz file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise InputError(f"{path}: not an npz file (a single .npy array)")
    if not magic.startswith(b"PK"):
        raise InputError(f"{path}: not an npz file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_layout(path, zf, layouts)
    except InputError:
        raise
    except READ_ERRORS as err:
        raise InputError(f"{path}: damaged or truncated npz file ({type(err).__name__}: {err})"[:300]) from None


def _read_layout(path: str, zf: zipfile.ZipFile, layouts: tuple = LAYOUTS) -> dict:
    import numpy as np

    names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    if not names:
        raise InputError(f"{path}: empty npz file (no arrays)")
    if "logits" in names and "probs" in names:
        raise InputError(f"{path}: holds both 'logits' and 'probs'; keep exactly one")
    for lkey, skey, kind in layouts:
        if lkey in names and skey in names:
            check_member(path, zf, lkey)
            check_member(path, zf, skey)
            out = {}
            for key, name in ((lkey, "labels"), (skey, kind)):
                with zf.open(key + ".npy") as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
            return out
    have = ", ".join(sorted(names)) or "nothing"
    raise InputError(f"{path}: missing keys: expected 'labels' and 'logits' or 'probs' "
                     f"(or test_labels and test_logits), found {have}")


def _table(result: dict, ci: dict | None, level: float, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from calbench.metrics import METRICS

    table = Table(title=title, title_justify="left")
    for col in ("metric", "value", "unit"):
        table.add_column(col)
    if ci:
        table.add_column(f"{level:.0%} CI")
    for key, value in result.items():
        spec = METRICS.get(key)
        scale, unit = (100.0, "%") if spec.percent else (1.0, spec.unit)
        row = [f"{key} ({spec.name})", f"{value * scale:.3f}", unit]
        if ci:
            lo, hi = ci[key]
            row.append(f"[{lo * scale:.3f}, {hi * scale:.3f}]")
        table.add_row(*row)
    Console().print(table)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded() -> None:
    """One compute thread per process, deliberately: metrics run in numpy (one thread by nature);
    torch, if some import brought it in, the BLAS behind the bootstrap's few matrix products and the
    OpenMP of the C kernels are limited to one thread, since on a loaded small machine extra threads
    only contend (the bootstrap's parallelism is its worker processes, --workers). The variables
    reach the libraries loaded later (a kernel's libgomp is loaded on first use), threadpoolctl the
    ones already loaded."""
    import sys

    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def as_logits(arrays: dict):
    """The logits of loaded predictions; probabilities become log-probabilities (softmax gives them back)."""
    import numpy as np

    if "logits" in arrays:
        return arrays["logits"]
    return np.log(np.clip(np.asarray(arrays["probs"], dtype=np.float64), np.finfo(np.float64).tiny, None))


def calibrated_predictions(arrays: dict, pred: str, posthoc: str | None, fit_on: str | None) -> dict:
    """{labels, logits | probs} of PRED after calibrator `posthoc` fitted on the predictions in `fit_on`
    (its val_labels / val_logits when it is a run's predictions.npz), scored as the engine scores them.
    One-line errors for a missing half of the pair, an unknown name, segmentation maps and another
    class count."""
    from calbench.posthoc import POSTHOC, calibrated_scores, fit_calibrator

    if not (posthoc and fit_on):
        raise InputError("--posthoc NAME and --fit-on VAL.npz go together (the calibrator is fitted on "
                         "VAL's predictions, then applied to PRED)")
    POSTHOC.get(posthoc)  # an unknown name is one line with the closest names
    val = load_predictions(fit_on, (("val_labels", "val_logits", "logits"), ("val_labels", "val_probs", "probs"))
                           + LAYOUTS)
    test_logits, val_logits = as_logits(arrays), as_logits(val)
    if test_logits.ndim != 2 or val_logits.ndim != 2:
        raise InputError(f"--posthoc: needs (N, K) classification predictions, got {pred} {test_logits.shape} "
                         f"and {fit_on} {val_logits.shape}")
    if test_logits.shape[1] != val_logits.shape[1]:
        raise InputError(f"--fit-on {fit_on} has {val_logits.shape[1]} classes but {pred} has "
                         f"{test_logits.shape[1]}; fit on predictions of the same model")
    try:
        calibrator = fit_calibrator(posthoc, val_logits, val["labels"])
    except InputError as err:
        raise InputError(f"{fit_on}: {err}") from None
    scores, kind = calibrated_scores(calibrator, test_logits)
    return {"labels": arrays["labels"], kind: scores}


@click.command("evaluate")
@click.argument("pred", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions) instead of a table.")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, help="Bins for ece/mce/cece/aece.")
@click.option("--bootstrap", "B", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap resamples for percentile intervals (0: none; 1000 is usual).")
@click.option("--ci", "level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Interval coverage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap generator seed.")
@click.option("--interval", default=None, metavar="percentile|basic|bca",
              help="Bootstrap interval kind [default: the one closest to nominal coverage in the study of "
                   "docs/metrics.md].")
@click.option("--metrics", "metrics", default=None, help="Comma-separated metric keys [default: every default metric].")
@click.option("--ignore-index", type=int, default=None, help="Label value to drop (segmentation, e.g. 255).")
@click.option("--posthoc", default=None, metavar="NAME",
              help="Score PRED after this post-hoc calibrator (`calbench list posthoc`), fitted on --fit-on.")
@click.option("--fit-on", "fit_on", default=None, metavar="VAL.npz",
              help="Validation predictions (labels and logits or probs, or a run's predictions.npz) "
                   "to fit --posthoc on.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes sharing the bootstrap's resamples, one thread each [default: this machine's "
                   "cores that other processes are not running on]; the numbers do not depend on it.")
def evaluate(pred: str, as_json: bool, bins: int, B: int, level: float, seed: int, ignore_index: int | None,
             interval: str | None = None, metrics: str | None = None, posthoc: str | None = None,
             fit_on: str | None = None, workers: int | None = None) -> None:
    """Compute the calibration metrics of PRED.npz.

    PRED.npz holds `labels` (N,) and `logits` or `probs` (N, K); segmentation (N, H, W) with
    (N, K, H, W). The run store's predictions.npz (test_labels, test_logits) is accepted too.
    """
    from calbench.commands.report import parse_metrics, resolve_interval
    from calbench.metrics import bootstrap_metrics, compute_metrics
    from calbench.metrics.conventions import metric_conventions
    from calbench.metrics.forked import idle_cores

    interval = resolve_interval(interval)
    keys = parse_metrics(metrics) if metrics else None
    single_threaded()
    arrays = load_predictions(pred)
    if posthoc or fit_on:
        arrays = calibrated_predictions(arrays, pred, posthoc, fit_on)
    try:
        if B:
            res = bootstrap_metrics(arrays.pop("labels"), **arrays, B=B, seed=seed, ci=level, bins=bins,
                                    ignore_index=ignore_index, interval=interval, keys=keys,
                                    workers=workers or idle_cores())
            point, ci = res["point"], res["ci"]
        else:
            point, ci = compute_metrics(arrays.pop("labels"), **arrays, bins=bins, ignore_index=ignore_index,
                                        keys=keys), None
    except InputError as err:
        raise InputError(f"{pred}: {err}") from None
    conventions = metric_conventions(tuple(point), bins, **({"interval": interval, "B": B} if B else {}))
    if as_json:
        out = dict(point)
        if ci:
            out["ci"] = {k: list(v) for k, v in ci.items()}
        out["conventions"] = conventions
        click.echo(json.dumps(out))
    else:
        title = f"{pred}" + (f"  (after {posthoc} fitted on {fit_on})" if posthoc else "")
        title += f"  ({interval} bootstrap B={B}, seed={seed})" if B else ""
        _table(point, ci, level, title)
        from calbench.metrics.conventions import convention_note

        click.echo(convention_note(tuple(point), bins, interval if B else None, B))
