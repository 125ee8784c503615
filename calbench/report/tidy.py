"""Load a results directory into one tidy table (one row per run x split x metric), read each run's
saved predictions, and refit post-hoc calibrators on them.

Everything `report` and `plot` show is built from this table plus the runs' predictions.npz
(load_predictions, calibrated_predictions), so every number traces back to saved predictions.
A store may hold damaged files (a results folder is shared, copied, interrupted): an unreadable
metrics.json is collected in Results.corrupt, a readable one with bad values in Results.warnings,
runs listed in recipe.json without a finished metrics.json in Results.missing; drop_unusable()
sets aside done runs whose predictions.npz cannot be used. Callers warn about each in one line
and report the rest.

Post-hoc calibrators (calbench.posthoc) are pure functions of a run's validation predictions, so
they are refitted here for any finished run, whatever its recipe's `posthoc:` list said; the fitted
state is cached beside the run as posthoc/<name>-<key>.json (see fitted_calibrator).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calbench.errors import CalbenchError, ConfigError, InputError

TIDY_COLUMNS = ("recipe", "run_id", "status", "method", "method_label", "dataset", "backbone", "seed",
                "method_order", "dataset_order", "backbone_order", "split", "metric", "value")


@dataclass
class Run:
    """One run directory whose metrics.json could be read (status "done" or "failed")."""

    run_dir: Path
    run_id: str
    status: str
    method: str
    method_label: str
    dataset: str
    backbone: str
    seed: int
    order: dict
    hparams: dict
    metrics: dict  # split -> metric -> fraction
    temperature: float | None = None
    reason: str | None = None
    posthoc_states: dict = field(default_factory=dict)  # calibrator name -> state the engine stored

    @property
    def done(self) -> bool:
        """Finished and usable (drop_unusable marks a run "unusable" when its predictions are not)."""
        return self.status == "done"

    @property
    def group(self) -> tuple[str, str]:
        """The column group of a Table-1-like table: (dataset, backbone)."""
        return (self.dataset, self.backbone)

    def history(self) -> list[dict]:
        """history.jsonl as a list of per-epoch dicts (empty when absent; bad lines skipped)."""
        path = self.run_dir / "history.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows


@dataclass
class Results:
    """A recipe's runs, the tidy table, and what could not be used."""

    root: Path
    recipe: str
    runs: list[Run]
    corrupt: list[tuple[Path, str]] = field(default_factory=list)  # (metrics.json, why)
    missing: list[dict] = field(default_factory=list)  # recipe.json entries with no metrics.json
    recipe_json: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each, naming the file

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.done]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.done]

    def tidy(self) -> pd.DataFrame:
        return tidy_table(self.recipe, self.runs)

    def methods(self) -> list[str]:
        """Method labels in recipe order (order.method, then first appearance)."""
        return _ordered([(r.order.get("method", 10 ** 6), r.method_label) for r in self.runs]
                        + [(m.get("order", {}).get("method", 10 ** 6), m["method_label"]) for m in self.missing
                           if m.get("method_label")])

    def groups(self) -> list[tuple[str, str]]:
        """(dataset, backbone) column groups in recipe order."""
        items = [((r.order.get("dataset", 10 ** 6), r.order.get("backbone", 10 ** 6)), r.group) for r in self.runs]
        items += [((m.get("order", {}).get("dataset", 10 ** 6), m.get("order", {}).get("backbone", 10 ** 6)),
                   (m["dataset"], m["backbone"])) for m in self.missing if m.get("dataset") and m.get("backbone")]
        return _ordered(items)


def _ordered(items) -> list:
    seen: dict = {}
    for i, (key, value) in enumerate(items):
        if value not in seen:
            seen[value] = (key, i)
    return sorted(seen, key=lambda v: seen[v])


def tidy_table(recipe: str, runs: list[Run]) -> pd.DataFrame:
    """One row per run x split x metric, values as fractions exactly as metrics.json stores them; runs in
    recipe order (method, dataset, backbone, seed)."""
    rows = []
    runs = sorted(runs, key=lambda r: (r.order.get("method", 10 ** 6), r.order.get("dataset", 10 ** 6),
                                       r.order.get("backbone", 10 ** 6), r.method_label, r.dataset, r.backbone,
                                       r.seed))
    for r in runs:
        for split, block in (r.metrics or {}).items():
            if not isinstance(block, dict):
                continue
            for metric, value in block.items():
                rows.append((recipe, r.run_id, r.status, r.method, r.method_label, r.dataset, r.backbone, r.seed,
                             r.order.get("method", -1), r.order.get("dataset", -1), r.order.get("backbone", -1),
                             split, metric, float(value) if value is not None else np.nan))
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def clean_metrics(metrics: Any) -> tuple[dict, list[str]]:
    """(blocks whose values are numbers or null, ["split.key = value", ...] that were not): a bad value
    is dropped rather than the whole run, since report recomputes every number from predictions."""
    if not isinstance(metrics, dict):
        return {}, ([f"metrics = {metrics!r:.40}"] if metrics else [])
    clean, bad = {}, []
    for split, block in metrics.items():
        if not isinstance(block, dict):
            bad.append(f"{split} = {block!r:.40}")
            continue
        clean[split] = {k: v for k, v in block.items() if v is None or _is_number(v)}
        bad += [f"{split}.{k} = {v!r:.40}" for k, v in block.items() if k not in clean[split]]
    return clean, bad


def _mapping(obj: dict, key: str) -> dict:
    value = obj.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"'{key}' is not an object")
    return dict(value)


def _run_from_json(run_dir: Path, obj: Any) -> tuple[Run, list[str]]:
    """The Run a metrics.json object describes and the values that were dropped from it; ValueError
    (or TypeError) when the object is not a run record at all."""
    if not isinstance(obj, dict) or obj.get("status") not in ("done", "failed"):
        raise ValueError("not a metrics.json object with status done/failed")
    method = str(obj.get("method") or "?")
    order = _mapping(obj, "order")
    if not all(_is_number(v) for v in order.values()):
        raise ValueError("'order' values must be numbers")
    metrics, bad = clean_metrics(obj.get("metrics"))
    temperature = obj.get("temperature")
    if temperature is not None and not (_is_number(temperature) and math.isfinite(temperature) and temperature > 0):
        bad.append(f"temperature = {temperature!r:.40}")
        temperature = None
    states = obj.get("posthoc") if isinstance(obj.get("posthoc"), dict) else {}
    run = Run(run_dir=run_dir, run_id=str(obj.get("run_id") or run_dir.name), status=obj["status"], method=method,
              method_label=str(obj.get("method_label") or method), dataset=str(obj.get("dataset") or "?"),
              backbone=str(obj.get("backbone") or "?"), seed=int(obj.get("seed") or 0), order=order,
              hparams=_mapping(obj, "hparams"), metrics=metrics, temperature=temperature,
              reason=None if obj.get("reason") is None else str(obj.get("reason")),
              posthoc_states={k: v for k, v in states.items() if isinstance(v, dict)})
    return run, bad


def list_recipes(root: Path) -> list[str]:
    """Recipe folders of a results directory: those with a recipe.json or at least one run folder."""
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "recipe.json").exists() or any((c / "metrics.json").exists() for c in d.iterdir() if c.is_dir()):
            out.append(d.name)
    return out


def _recipe_entry(raw: Any) -> dict:
    """One run entry of recipe.json keeping only fields of the expected kinds (a hand-edited or damaged
    recipe.json must not break the report of runs that are fine)."""
    if not isinstance(raw, dict):
        return {"run_id": str(raw)}
    entry = {k: str(raw[k]) for k in ("run_id", "method", "method_label", "dataset", "backbone")
             if isinstance(raw.get(k), (str, int)) and not isinstance(raw.get(k), bool)}
    if isinstance(raw.get("seed"), int) and not isinstance(raw.get("seed"), bool):
        entry["seed"] = raw["seed"]
    order = raw.get("order")
    if isinstance(order, dict) and all(_is_number(v) for v in order.values()):
        entry["order"] = dict(order)
    return entry


def _recipe_entries(obj: dict) -> list[dict]:
    """The run entries of recipe.json ("runs": list of dicts or ids, or "run_ids")."""
    runs = obj.get("runs")
    if isinstance(runs, list):
        return [_recipe_entry(r) for r in runs]
    if isinstance(obj.get("run_ids"), list):
        return [{"run_id": str(r)} for r in obj["run_ids"]]
    return []


def _read_recipe_json(path: Path) -> tuple[dict, str | None]:
    """(recipe.json object, None) or ({}, a warning line) when it is unreadable or not an object."""
    if not path.exists():
        return {}, None
    try:
        obj = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        return {}, f"{path}: unreadable recipe.json, ignored ({str(err).splitlines()[0]})"
    if not isinstance(obj, dict):
        return {}, f"{path}: recipe.json is not a JSON object, ignored"
    return obj, None


def _read_runs(rdir: Path) -> tuple[list[Run], list[tuple[Path, str]], list[str]]:
    """(runs, corrupt metrics.json files with why, warnings about dropped values) of a recipe folder."""
    runs, corrupt, warnings = [], [], []
    for d in sorted(p for p in rdir.iterdir() if p.is_dir()):
        path = d / "metrics.json"
        if not path.exists():
            continue
        try:
            run, bad = _run_from_json(d, json.loads(path.read_text()))
        except (ValueError, TypeError, OSError, RecursionError) as err:
            corrupt.append((path, (str(err).split("\n")[0] or type(err).__name__)[:200]))
            continue
        if bad:
            warnings.append(f"{path}: not a number, ignored: {', '.join(bad[:3])}"
                            + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""))
        runs.append(run)
    return runs, corrupt, warnings


def _choose_recipe(root: Path, recipe: str | None) -> str:
    recipes = list_recipes(root)
    if not recipes:
        raise InputError(f"{root}: no results found (expected {root}/<recipe>/<run id>/metrics.json)")
    if recipe is None:
        if len(recipes) > 1:
            raise InputError(f"{root}: several recipes ({', '.join(recipes)}); choose one with --recipe")
        return recipes[0]
    if recipe not in recipes:
        from calbench.registry import did_you_mean
        raise InputError(f"{root}: unknown recipe '{recipe}'{did_you_mean(recipe, recipes)}; "
                         f"valid: {', '.join(recipes)}")
    return recipe


def load_results(results: str | Path = "results", recipe: str | None = None) -> Results:
    """Read every run of one recipe. recipe=None picks the only recipe there; InputError when the
    directory holds no results, several recipes and none chosen, or an unknown recipe."""
    root = Path(results)
    recipe = _choose_recipe(root, recipe)
    rdir = root / recipe
    recipe_json, recipe_warning = _read_recipe_json(rdir / "recipe.json")
    runs, corrupt, warnings = _read_runs(rdir)
    seen = {r.run_id for r in runs} | {r.run_dir.name for r in runs}
    bad = {p.parent.name for p, _ in corrupt}
    missing = [dict(e, why="unreadable metrics.json" if e.get("run_id") in bad else "not run")
               for e in _recipe_entries(recipe_json) if e.get("run_id") not in seen]
    if not runs and not missing and not corrupt:
        raise InputError(f"{rdir}: no runs found")
    return Results(root=root, recipe=recipe, runs=runs, corrupt=corrupt, missing=missing, recipe_json=recipe_json,
                   warnings=[recipe_warning] * bool(recipe_warning) + warnings)


# --- saved predictions -------------------------------------------------------------------------

PREDICTIONS = "predictions.npz"
# what a damaged archive raises while opening or decompressing (a planted pickle: ValueError)
_ARCHIVE_ERRORS = (OSError, ValueError, KeyError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error)


def _check_split(path: Path, split: str, labels: np.ndarray, logits: np.ndarray) -> None:
    """(N, K) float logits with (N,) integer labels, or segmentation (N, K, H, W) with (N, H, W)."""
    shape = f"{split}_logits {logits.shape}, {split}_labels {labels.shape}"
    if logits.dtype.kind != "f" or labels.dtype.kind not in "iu":
        raise InputError(f"{path}: {split} predictions must be float logits and integer labels, "
                         f"got {logits.dtype} and {labels.dtype}")
    if logits.ndim == 2:
        good = labels.shape == logits.shape[:1]
    else:
        good = logits.ndim == 4 and labels.shape == logits.shape[:1] + logits.shape[2:]
    if not good or logits.shape[1] < 1:
        raise InputError(f"{path}: wrong prediction shapes ({shape}; expected (N, K) and (N,))")


def read_predictions(run: Run, splits=("test",)) -> dict[str, np.ndarray]:
    """{"<split>_labels", "<split>_logits"} of each split from the run's predictions.npz, checked.

    InputError (one line naming the file) for a missing, truncated, empty or non-npz file, a missing
    array, or shapes that do not fit; nothing is unpickled."""
    path = run.run_dir / PREDICTIONS
    names = [f"{split}_{kind}" for split in splits for kind in ("labels", "logits")]
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            absent = [n for n in names if n not in data.files]
            if absent:
                raise InputError(f"{path}: no {', '.join(absent)} saved")
            arrays = {n: data[n] for n in names}
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except _ARCHIVE_ERRORS as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: unreadable ({why[:160]})") from None
    for split in splits:
        _check_split(path, split, arrays[f"{split}_labels"], arrays[f"{split}_logits"])
    return arrays


def drop_unusable(results: Results, *, posthoc=()) -> list[str]:
    """Check every done run's predictions and, for each calibrator in `posthoc` (PosthocSpecs), that
    it can be fitted on the run's validation predictions (the fit is cached, so this costs nothing
    later); mark the runs that cannot be used as status "unusable" with the reason, and return one
    line per such run, naming its file. The caller warns, then reports the rest."""
    splits = ("test", "val") if posthoc else ("test",)
    lines = []
    for run in results.done:
        try:
            arrays = read_predictions(run, splits)
            for spec in posthoc:
                fitted_calibrator(run, spec, arrays)
        except InputError as err:
            run.status, run.reason = "unusable", str(err)
            lines.append(f"{err}; run skipped")
    return lines


def load_predictions(run: Run, split: str = "test", posthoc: "str | PosthocSpec | None" = None) -> dict:
    """{"labels", "logits"} of a run's saved predictions for split "test" or "val"; with posthoc (a
    calibrator name, "name:key=value", or a PosthocSpec) the test predictions after that calibrator
    refitted on the run's validation predictions: {"labels", "logits"} or {"labels", "probs"}
    according to the calibrator's output (see calibrated_predictions)."""
    if posthoc is None:
        arrays = read_predictions(run, (split,))
        pred = {"labels": arrays[f"{split}_labels"], "logits": arrays[f"{split}_logits"]}
    elif split != "test":
        raise ValueError(f"post-hoc calibrators are fitted on val and applied to test, not to {split!r}")
    else:
        labels, scores, kind = calibrated_predictions(run, posthoc)
        pred = {"labels": labels, kind: scores}
    return pred | long_tail_inputs(run)


def long_tail_inputs(run: Run) -> dict:
    """{"class_counts", "shot_thresholds"} for the long-tail metrics (docs/metrics.md) when the run
    saved its train class counts beside its predictions (`train_class_counts`), else {}. The
    thresholds are the (few_below, many_above) the run saved (`train_shot_thresholds`); a store
    written before they were saved gives the dataset name instead, and
    calbench.report.intervals.long_tail_options looks the dataset's rule up in its registry."""
    try:
        with np.load(run.run_dir / PREDICTIONS, allow_pickle=False) as data:
            if "train_class_counts" not in data.files:
                return {}
            counts = np.asarray(data["train_class_counts"])
            saved = np.asarray(data["train_shot_thresholds"]) if "train_shot_thresholds" in data.files else None
    except _ARCHIVE_ERRORS:
        return {}   # read_predictions above has checked the file; a damaged extra array only drops these
    if saved is not None and saved.shape == (2,) and np.isfinite(saved).all():
        return {"class_counts": counts, "shot_thresholds": (float(saved[0]), float(saved[1]))}
    return {"class_counts": counts, "dataset": run.dataset}


# --- post-hoc calibrators refitted at report time ----------------------------------------------

@dataclass(frozen=True)
class PosthocSpec:
    """A calibrator name with the hyper-parameters the user gave (the rest keep their defaults)."""

    name: str
    hparams: tuple = ()  # sorted (key, value) pairs

    @property
    def label(self) -> str:
        """How tables and figures name it: "ts", "hb(bins=10)"."""
        args = ",".join(f"{k}={v}" for k, v in self.hparams)
        return f"{self.name}({args})" if args else self.name

    @property
    def split(self) -> str:
        """The metrics.json block the engine stores for this calibrator with default hyper-parameters."""
        return f"test_{self.name}"


def parse_posthoc(text: "str | PosthocSpec") -> PosthocSpec:
    """"NAME" or "NAME:KEY=VALUE[:KEY=VALUE...]" (values in YAML: 10, 0.5, true, equal-mass) into a
    PosthocSpec whose name is registered and whose hyper-parameters are valid (ConfigError, or
    UnknownNameError with a did-you-mean, otherwise)."""
    from calbench.posthoc import POSTHOC, check_calibrator_hparams

    if isinstance(text, PosthocSpec):
        return text
    name, *assignments = [part.strip() for part in str(text).split(":")]
    POSTHOC.get(name)
    hparams = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--posthoc {text}: expected NAME:KEY=VALUE, got '{item}'")
        hparams[key.strip()] = _yaml_scalar(value.strip())
    check_calibrator_hparams(name, hparams)
    return PosthocSpec(name, tuple(sorted(hparams.items())))


def _yaml_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def parse_posthoc_list(text: str | None) -> list[PosthocSpec]:
    """Comma-separated calibrators ("ts,vs,hb:bins=10") in the order given, duplicates dropped."""
    specs = [parse_posthoc(part) for part in (text or "").split(",") if part.strip()]
    return list({spec.label: spec for spec in reversed(specs)}.values())[::-1]


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_path(run: Run, spec: PosthocSpec, hparams: dict, val_logits: np.ndarray, val_labels: np.ndarray) -> Path:
    """<run dir>/posthoc/<name>-<key>.json; the key hashes the full hyper-parameters, the calibrator's
    version and the validation data, so a changed calibrator or changed predictions never reuse a state."""
    from calbench.posthoc import POSTHOC

    identity = {"calibrator": spec.name, "version": POSTHOC.get(spec.name).version, "hparams": hparams,
                "val": _digest(val_logits, val_labels)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return run.run_dir / "posthoc" / f"{spec.name}-{key}.json"


def _cached_state(path: Path, cls, hparams: dict):
    """The calibrator a cache file holds, or None when absent or not a valid state of these hparams."""
    try:
        state = json.loads(path.read_text())
        if state.get("hparams") != json.loads(json.dumps(hparams)):
            return None
        return cls.from_state(state)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, CalbenchError):
        return None


def _write_atomically(path: Path, obj: dict) -> None:
    """Write JSON through a temporary file and a rename (readers never see half a file); skipped when
    the store is not writable (a read-only or full results directory still reports)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def fitted_calibrator(run: Run, posthoc: "str | PosthocSpec", arrays: dict | None = None):
    """Calibrator `posthoc` fitted on the run's saved validation predictions (float64, the engine's
    code path), from the run's cache when a state for the same calibrator version, hyper-parameters
    and validation data is there, else fitted and cached. Never retrains the network."""
    from calbench.posthoc import POSTHOC, check_calibrator_hparams, create_calibrator

    spec = parse_posthoc(posthoc)
    arrays = arrays if arrays is not None else read_predictions(run, ("val",))
    val_logits, val_labels = arrays["val_logits"], arrays["val_labels"]
    if val_logits.ndim != 2:
        raise InputError(f"{run.run_dir / PREDICTIONS}: post-hoc calibrators need (N, K) validation logits, "
                         f"got {val_logits.shape}")
    hparams = check_calibrator_hparams(spec.name, dict(spec.hparams))
    path = cache_path(run, spec, hparams, val_logits, val_labels)
    cls = POSTHOC.get(spec.name)
    if path in _FITTED:  # fitted earlier in this process (a read-only store has no cache file)
        return cls.from_state(_FITTED[path])
    calibrator = _cached_state(path, cls, hparams)
    if calibrator is None:
        try:
            calibrator = create_calibrator(spec.name, **hparams).fit(val_logits, val_labels)
        except InputError as err:
            raise InputError(f"{run.run_dir / PREDICTIONS}: {err}") from None
        _write_atomically(path, calibrator.state())
    _FITTED[path] = calibrator.state()
    return calibrator


_FITTED: dict[Path, dict] = {}  # cache path -> state, for this process


def calibrated_predictions(run: Run, posthoc: "str | PosthocSpec") -> tuple[np.ndarray, np.ndarray, str]:
    """(test labels, calibrated test scores, kind) of a finished run after post-hoc calibrator `posthoc`.

    posthoc: a registered calibrator name ("ts"), with hyper-parameters ("hb:bins=10"), or a
    PosthocSpec. The calibrator is refitted on the run's saved validation predictions (cached, see
    fitted_calibrator) and applied to its saved test logits exactly as the engine scores them
    (calbench.posthoc.calibrated_scores: float64 transform; logits rounded to float32). kind is
    "logits" or "probs" (the calibrator's declared output), the keyword to pass the scores under:

        labels, scores, kind = calibrated_predictions(run, "ts")
        compute_metrics(labels, **{kind: scores})           # or reliability_bins(labels, **{kind: scores})

    Raises InputError naming predictions.npz when the run has no usable test or validation
    predictions, UnknownNameError / ConfigError for an unknown calibrator or a bad hyper-parameter.
    """
    from calbench.posthoc import calibrated_scores

    arrays = read_predictions(run, ("test", "val"))
    calibrator = fitted_calibrator(run, posthoc, arrays)
    test_logits = arrays["test_logits"]
    if test_logits.ndim != 2:
        raise InputError(f"{run.run_dir / PREDICTIONS}: post-hoc calibrators need (N, K) test logits, "
                         f"got {test_logits.shape}")
    scores, kind = calibrated_scores(calibrator, test_logits)
    return arrays["test_labels"], scores, kind


def posthoc_tidy(results: Results, specs, keys=None, bins: int = 15) -> pd.DataFrame:
    """Rows of the tidy table for each done run after each calibrator (split "posthoc:<label>"), the
    metrics recomputed from the calibrated test predictions (keys None: every default metric)."""
    from calbench.metrics import compute_metrics

    rows = []
    for spec in specs:
        for r in results.done:
            labels, scores, kind = calibrated_predictions(r, spec)
            values = compute_metrics(labels, **{kind: scores}, bins=bins, keys=keys)
            rows += [(results.recipe, r.run_id, r.status, r.method, r.method_label, r.dataset, r.backbone, r.seed,
                      r.order.get("method", -1), r.order.get("dataset", -1), r.order.get("backbone", -1),
                      f"posthoc:{spec.label}", metric, float(value)) for metric, value in values.items()]
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def add_conventions(tidy: pd.DataFrame, bins: int, stored_bins: int = 15) -> pd.DataFrame:
    """The estimator settings of each row as columns (calbench.metrics.conventions): bins, binning,
    scope, scale ("fraction": values as stored), interval and B ("none", 0: tidy values are point
    estimates). Rows read from metrics.json were computed with the engine's `stored_bins`; rows
    recomputed here ("posthoc:" splits) with `bins`."""
    from calbench.metrics import METRICS
    from calbench.metrics.conventions import binning_of, scope_of

    out = tidy.copy()
    known = out["metric"].isin(list(METRICS.names()))
    recomputed = out["split"].astype(str).str.startswith("posthoc:")
    out["bins"] = np.where(recomputed, int(bins), int(stored_bins))
    out["binning"] = [binning_of(m) if k else "" for m, k in zip(out["metric"], known)]
    out["scope"] = [scope_of(m) if k else "" for m, k in zip(out["metric"], known)]
    out["scale"], out["interval"], out["B"] = "fraction", "none", 0
    return out
