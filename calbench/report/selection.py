"""Selection on validation, never on test: one row per method when a method is swept.

Calibration papers often tune each baseline on the test set or by hand; a benchmark has to say
which configuration it reports and pick it without looking at the test set. When one method has
several configurations in one dataset x backbone cell (a list value in the recipe:
`mbls: {margin: [5, 10, 15]}`), the report shows one row for it: the configuration whose
validation criterion, computed from each run's saved validation predictions (predictions.npz
val_logits / val_labels, never a test array) and averaged over seeds, is best. The criterion
defaults to validation NLL (a proper scoring rule: it rewards accuracy and calibration at once);
a recipe may name another, with a constraint against a reference method:

    select: {by: val.ece, subject_to: "val.acc >= ce.val.acc - 1.0"}

The constraint grammar is deliberately tiny (nothing is evaluated as code): SIDE OP SIDE with OP
one of >= <= > <, each SIDE terms joined by + or -, each term a number or `[METHOD.]val.METRIC`
(METRIC a registered metric key; without METHOD: the candidate itself; with it: that method in the
same cell, its own configuration chosen by the criterion alone). Metrics the tables show x100 are
x100 in the expression too (`1.0` above is one accuracy point). When no configuration satisfies
the constraint, the criterion alone decides and the footnote says so.

The record (criterion, candidates, their validation values, the winner) is written atomically to
<results>/<recipe>/selection.json and added to `report --csv` rows.

`--posthoc best` chooses, per table cell, the post-hoc calibrator with the best validation
criterion. A calibrator fitted on the validation set and scored on it would be judged on the data
it was fitted to (flexible calibrators would look best), so each run's validation set is split in
two halves by a seeded permutation; each candidate is fitted on one half and scored on the other,
both ways, and the two scores averaged (2-fold cross-fitting). The chosen calibrator is then
fitted on the whole validation set, as every other post-hoc block is.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calbench.errors import ConfigError, InputError

DEFAULT_BY = "val.nll"
BEST = "best"
RECORD = "selection.json"
_OPS = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<ref>[A-Za-z][A-Za-z0-9_-]*"
                    r"(?:\.[A-Za-z0-9_]+)+)|(?P<op>>=|<=|>|<)|(?P<sign>[+-]))")


# --- the criterion and its constraint ---------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """`[method.]val.metric`: a validation value of the candidate (method None) or of a method."""

    method: str | None
    key: str


@dataclass(frozen=True)
class Constraint:
    """SIDE OP SIDE; each side is ((+1 or -1, number or Ref), ...)."""

    text: str
    lhs: tuple
    op: str
    rhs: tuple

    def refs(self) -> list[Ref]:
        return [t for _, t in self.lhs + self.rhs if isinstance(t, Ref)]

    def evaluate(self, lookup: Callable[[Ref], float]) -> tuple[float, float, bool]:
        """(left, right, satisfied) with lookup giving each Ref's value on the expression scale."""
        def side(terms):
            return float(sum(sign * (lookup(t) if isinstance(t, Ref) else t) for sign, t in terms))

        left, right = side(self.lhs), side(self.rhs)
        return left, right, bool(_OPS[self.op](left, right))


@dataclass(frozen=True)
class SelectSpec:
    """The validation criterion `by` ("val.<metric>") and an optional constraint."""

    by: str = DEFAULT_BY
    subject_to: Constraint | None = None

    @property
    def key(self) -> str:
        return self.by.split(".", 1)[1]

    @property
    def text(self) -> str:
        return self.by + (f" subject to {self.subject_to.text}" if self.subject_to else "")

    def to_json(self) -> dict:
        return {"by": self.by, "subject_to": self.subject_to.text if self.subject_to else None}


def _metric_key(text: str, where: str) -> str:
    """"val.<key>" -> key, checked against the metric registry; test values are refused by name."""
    from calbench.metrics import METRICS
    from calbench.registry import did_you_mean

    split, _, key = str(text).partition(".")
    if split != "val" or not key:
        raise ConfigError(f"{where}: expected val.<metric> (selection reads validation predictions only), "
                          f"got '{text}'")
    if key not in METRICS:
        raise ConfigError(f"{where}: unknown metric '{key}'{did_you_mean(key, list(METRICS))}; "
                          f"valid: {', '.join(METRICS)}")
    return key


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(f"{where}: cannot read '{text[pos:].strip()[:30]}' in '{text}' (expected "
                              "numbers, [method.]val.metric, + - and one of >= <= > <)")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def _side(tokens: list[tuple[str, str]], where: str, text: str) -> tuple:
    """Terms of one side: [sign] term ([+-] [sign] term)*."""
    terms, sign, expect_term, unary = [], 1, True, False
    for kind, value in tokens:
        s = -1 if value == "-" else 1
        if kind == "sign" and not expect_term:
            sign, expect_term = s, True
        elif kind == "sign" and not unary:
            sign, unary = sign * s, True
        elif kind in ("num", "ref") and expect_term:
            terms.append((sign, float(value) if kind == "num" else _ref(value, where)))
            sign, expect_term, unary = 1, False, False
        else:
            raise ConfigError(f"{where}: unexpected '{value}' in '{text}'")
    if expect_term:
        raise ConfigError(f"{where}: a side of '{text}' lacks a number or val.metric")
    return tuple(terms)


def _ref(text: str, where: str) -> Ref:
    parts = text.split(".")
    if parts[0] == "val":
        return Ref(None, _metric_key(text, where))
    return Ref(parts[0], _metric_key(".".join(parts[1:]), where))


def parse_constraint(text: Any, where: str = "select.subject_to") -> Constraint:
    """'SIDE OP SIDE' (see the module docstring) into a Constraint; ConfigError naming `where`."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: expected an expression such as 'val.acc >= ce.val.acc - 1.0', got {text!r}")
    tokens = _tokens(text, where)
    ops = [i for i, (kind, _) in enumerate(tokens) if kind == "op"]
    if len(ops) != 1:
        raise ConfigError(f"{where}: expected exactly one of >= <= > < in '{text}'")
    i = ops[0]
    return Constraint(text.strip(), _side(tokens[:i], where, text), tokens[i][1], _side(tokens[i + 1:], where, text))


def parse_select(obj: Any, where: str = "select") -> SelectSpec:
    """None (the default, val.nll), "val.<metric>", or {by: ..., subject_to: ...} into a SelectSpec."""
    if obj is None:
        return SelectSpec()
    if isinstance(obj, SelectSpec):
        return obj
    if isinstance(obj, str):
        obj = {"by": obj}
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected {{by: val.<metric>, subject_to: '...'}}, got {obj!r}")
    unknown = sorted(str(k) for k in obj if k not in ("by", "subject_to"))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; valid: by, subject_to")
    by = obj.get("by") or DEFAULT_BY
    _metric_key(by, f"{where}.by")
    constraint = obj.get("subject_to")
    return SelectSpec(str(by), None if constraint is None else parse_constraint(constraint, f"{where}.subject_to"))


# --- validation values of runs ------------------------------------------------------------------

def _scale(key: str) -> float:
    from calbench.metrics import METRICS

    return 100.0 if METRICS.get(key).percent else 1.0


def _header(key: str) -> str:
    from calbench.metrics import METRICS

    return METRICS.get(key).header


def _higher_is_better(key: str) -> bool:
    from calbench.metrics import METRICS

    return bool(METRICS.get(key).higher_is_better)


class ValidationValues:
    """Metrics of each run's saved validation predictions (read once per run in this object; only
    the val_* arrays of predictions.npz are read). A run without usable ones is warned about once."""

    def __init__(self, keys, bins: int = 15, on_warning: Callable[[str], None] | None = None):
        self.keys, self.bins, self.on_warning = tuple(dict.fromkeys(keys)), bins, on_warning
        self._values: dict[str, dict | None] = {}

    def of_run(self, run) -> dict | None:
        from calbench.metrics import compute_metrics
        from calbench.report.tidy import read_predictions

        if run.run_id not in self._values:
            try:
                arrays = read_predictions(run, ("val",))
                self._values[run.run_id] = compute_metrics(arrays["val_labels"], logits=arrays["val_logits"],
                                                           bins=self.bins, keys=self.keys)
            except InputError as err:
                self._values[run.run_id] = None
                if self.on_warning:
                    self.on_warning(f"{err}; run left out of the selection on validation")
        return self._values[run.run_id]

    def mean(self, runs) -> tuple[dict | None, list]:
        """(mean over runs of each key, [(run, values)] of the runs that have validation values)."""
        have = [(r, v) for r in runs for v in [self.of_run(r)] if v is not None]
        if not have:
            return None, []
        return {k: float(np.mean([v[k] for _, v in have])) for k in self.keys}, have


# --- choosing a configuration per (method, cell) ------------------------------------------------

@dataclass
class Candidate:
    label: str
    setting: str                 # the hyper-parameters that differ between the candidates: "margin=10"
    values: dict | None          # mean validation metrics over the runs below (fractions); None: none
    runs: list = field(default_factory=list)   # [(run_id, seed, {metric: value})]
    constraint: tuple | None = None            # (left, right, satisfied) on the expression scale

    def score(self, key: str) -> float:
        return np.nan if self.values is None else self.values[key]


@dataclass
class CellChoice:
    method: str
    group: tuple
    candidates: list[Candidate]
    winner: str | None
    note: str = ""               # why the constraint was not applied, when it was not

    def to_json(self) -> dict:
        return {"method": self.method, "dataset": self.group[0], "backbone": self.group[1], "winner": self.winner,
                "note": self.note or None,
                "candidates": [{"label": c.label, "setting": c.setting, "validation": c.values,
                                "constraint": None if c.constraint is None else
                                dict(zip(("left", "right", "satisfied"), c.constraint)),
                                "runs": [{"run_id": i, "seed": s, "validation": v} for i, s, v in c.runs]}
                               for c in self.candidates]}


@dataclass
class Selection:
    spec: SelectSpec
    source: str                  # "default", "recipe" or "--select-by"
    cells: list[CellChoice] = field(default_factory=list)
    all_configs: bool = False
    posthoc: list[dict] = field(default_factory=list)   # --posthoc best choices
    path: Path | None = None

    def winners(self) -> dict:
        return {(c.method, c.group): c.winner for c in self.cells}

    def record(self) -> dict:
        return {"criterion": self.spec.to_json(), "source": self.source, "reads": "validation predictions only",
                "aggregate": "mean over seeds", "direction": "higher" if _higher_is_better(self.spec.key) else "lower",
                "all_configs": self.all_configs, "cells": [c.to_json() for c in self.cells],
                "posthoc_best": self.posthoc}

    def notes(self) -> list[str]:
        """Table footnotes: the rule once, then the selected setting of each swept method per cell."""
        lines = []
        if self.cells:
            rows = "every configuration is shown" if self.all_configs else "one row per method"
            lines.append(f"selected on validation ({rows}): the configuration with the "
                         f"{'highest' if _higher_is_better(self.spec.key) else 'lowest'} {self.spec.text} "
                         f"(mean over seeds, from saved validation predictions; test never consulted)"
                         + (f"; record: {self.path}" if self.path else ""))
            lines += [_choice_line(c, self.spec) for c in self.cells]
        if self.posthoc:
            lines.append("post-hoc best: per cell, the calibrator with the best validation "
                         f"{self.spec.key} on a seeded 2-fold split of each run's validation set (fitted on one "
                         "half, scored on the other; scoring on the fitting half would flatter flexible "
                         "calibrators), then refitted on all of it: "
                         + "; ".join(f"{p['row']} on {p['dataset']} / {p['backbone']}: {p['winner']}"
                                     for p in self.posthoc))
        return lines


def _shown(key: str, value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value * _scale(key):.{2 if _scale(key) > 1 else 3}f}"


def _choice_line(choice: CellChoice, spec: SelectSpec) -> str:
    key = spec.key
    won = next((c for c in choice.candidates if c.label == choice.winner), None)
    others = ", ".join(f"{c.setting} {_shown(key, c.score(key))}" for c in choice.candidates if c is not won)
    head = f"{choice.method} on {choice.group[0]} / {choice.group[1]}: "
    if won is None:
        return head + f"no configuration has validation predictions ({others})"
    text = head + f"{won.setting} (val {_header(key)} {_shown(key, won.score(key))}; others: {others or 'none'})"
    return text + (f" [{choice.note}]" if choice.note else "")


def _setting_names(runs_by_label: dict) -> dict[str, str]:
    """label -> "k=v,..." of the hyper-parameters that differ between the labels (the label itself when
    the stored hyper-parameters do not tell them apart)."""
    params = {label: (runs[0].hparams if runs else {}) for label, runs in runs_by_label.items()}
    keys = sorted({k for p in params.values() for k in p})
    varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params.values()}) > 1]
    out = {}
    for label, p in params.items():
        text = ",".join(f"{k}={p[k]:g}" if isinstance(p.get(k), float) else f"{k}={p.get(k)}" for k in varying)
        out[label] = text or label
    if len(set(out.values())) < len(out):
        return {label: label for label in out}
    return out


def swept_cells(results) -> dict[tuple[str, tuple], dict[str, list]]:
    """{(method, group): {label: done runs}} for every cell where a method has several labels (runs of
    any status and recipe.json entries count, so a configuration whose runs all failed is still a
    candidate, with no value)."""
    labels: dict = {}
    for r in results.runs:
        labels.setdefault((r.method, r.group), {}).setdefault(r.method_label, [])
        if r.done:
            labels[(r.method, r.group)][r.method_label].append(r)
    for m in results.missing:
        if m.get("method") and m.get("method_label") and m.get("dataset"):
            key = (m["method"], (m["dataset"], m.get("backbone", "?")))
            labels.setdefault(key, {}).setdefault(m["method_label"], [])
    return {k: v for k, v in labels.items() if len(v) > 1}


def _unconstrained_winner(candidates: list[Candidate], key: str) -> Candidate | None:
    scored = [c for c in candidates if np.isfinite(c.score(key))]
    if not scored:
        return None
    sign = -1.0 if _higher_is_better(key) else 1.0
    return min(scored, key=lambda c: sign * c.score(key))  # min keeps the first (recipe order) of ties


def _candidates(runs_by_label: dict, values: ValidationValues) -> list[Candidate]:
    settings = _setting_names(runs_by_label)
    out = []
    for label, runs in runs_by_label.items():
        mean, have = values.mean(sorted(runs, key=lambda r: r.seed))
        out.append(Candidate(label, settings[label], mean, [(r.run_id, r.seed, v) for r, v in have]))
    return out


class _Chooser:
    """Chooses per (method, cell); reference values for constraints come from the same store."""

    def __init__(self, results, spec: SelectSpec, values: ValidationValues):
        self.results, self.spec, self.values = results, spec, values
        self.swept = swept_cells(results)

    def reference(self, method: str, group) -> dict | None:
        """Validation means of `method` in `group`: its only label, or its unconstrained winner."""
        key = (method, group)
        if key in self.swept:
            won = _unconstrained_winner(_candidates(self.swept[key], self.values), self.spec.key)
            return None if won is None else won.values
        runs = [r for r in self.results.done if r.method == method and r.group == group]
        return self.values.mean(runs)[0]

    def choose(self, method: str, group, runs_by_label: dict) -> CellChoice:
        candidates = _candidates(runs_by_label, self.values)
        constraint, note = self.spec.subject_to, ""
        pool = candidates
        if constraint is not None:
            refs = {ref.method: self.reference(ref.method, group) for ref in constraint.refs() if ref.method}
            absent = sorted(m for m, v in refs.items() if v is None)
            if absent:
                note = f"constraint not applied: no validation values of {', '.join(absent)} here"
            else:
                for c in candidates:
                    if c.values is not None:
                        c.constraint = constraint.evaluate(
                            lambda ref: (refs[ref.method] if ref.method else c.values)[ref.key] * _scale(ref.key))
                pool = [c for c in candidates if c.constraint and c.constraint[2]]
                if not pool and any(c.values for c in candidates):
                    note, pool = f"no configuration satisfies {constraint.text}: chosen by {self.spec.by} alone", candidates
        won = _unconstrained_winner(pool, self.spec.key)
        return CellChoice(method, group, candidates, None if won is None else won.label, note)


def resolve_spec(results, select: Any = None) -> tuple[SelectSpec, str]:
    """(criterion, where it came from): the command line's, else the recipe's `select:` as recorded in
    recipe.json, else validation NLL."""
    if select is not None:
        return parse_select(select, "--select-by"), "--select-by"
    stored = results.recipe_json.get("select") if isinstance(results.recipe_json, dict) else None
    if stored is not None:
        where = f"{results.root / results.recipe / 'recipe.json'}: select"
        try:
            return parse_select(stored, where), "recipe"
        except ConfigError as err:
            raise InputError(str(err)) from None
    return SelectSpec(), "default"


def choose_configs(results, select: Any = None, *, bins: int = 15, on_warning=None) -> Selection:
    """The Selection of every swept (method, cell) of `results` (reads validation predictions only)."""
    spec, source = resolve_spec(results, select)
    keys = [spec.key] + [r.key for r in (spec.subject_to.refs() if spec.subject_to else [])]
    chooser = _Chooser(results, spec, ValidationValues(keys, bins, on_warning))
    cells = [chooser.choose(method, group, runs) for (method, group), runs in chooser.swept.items()]
    order, first = {g: i for i, g in enumerate(results.groups())}, _first_order(results)
    cells.sort(key=lambda c: (first.get(c.method, 10 ** 6), order.get(c.group, 10 ** 6)))
    return Selection(spec, source, cells)


def _first_order(results) -> dict[str, int]:
    """method -> the smallest recipe order of its configurations (where its one row goes)."""
    first: dict[str, int] = {}
    for r in results.runs:
        first[r.method] = min(first.get(r.method, 10 ** 6), r.order.get("method", 10 ** 6))
    return first


def restrict(results, selection: Selection):
    """A copy of `results` where each swept method keeps, per cell, only its selected configuration,
    relabelled with the method's name (one row per method, in the order of its first configuration)."""
    swept = {c.method for c in selection.cells}
    if not swept:
        return results
    winners, first = selection.winners(), _first_order(results)

    def keep(method, label, group) -> bool:
        return method not in swept or winners.get((method, group)) in (None, label)

    runs = [replace(r, method_label=r.method, order={**r.order, "method": first[r.method]}) if r.method in swept else r
            for r in results.runs if keep(r.method, r.method_label, r.group)]
    missing = []
    for m in results.missing:
        group = (m.get("dataset"), m.get("backbone", "?"))
        if m.get("method") in swept and keep(m["method"], m.get("method_label"), group):
            m = dict(m, method_label=m["method"], order={**m.get("order", {}), "method": first.get(m["method"], 10 ** 6)})
        elif m.get("method") in swept:
            continue
        missing.append(m)
    return replace(results, runs=runs, missing=missing)


def save_record(results, selection: Selection) -> Path | None:
    """Write the record to <results>/<recipe>/selection.json through a temporary file and a rename;
    None (nothing written) when the store is not writable."""
    path = Path(results.root) / results.recipe / RECORD
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(selection.record(), indent=1, default=float))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return None
    selection.path = path
    return path


def select_configs(results, select: Any = None, *, all_configs: bool = False, bins: int = 15, on_warning=None):
    """(results to report, Selection): swept methods reduced to their selected configuration (all of
    them kept with all_configs=True); the record is saved beside recipe.json."""
    selection = choose_configs(results, select, bins=bins, on_warning=on_warning)
    selection.all_configs = all_configs
    if selection.cells:
        save_record(results, selection)
    return (results if all_configs else restrict(results, selection)), selection


# --- the --csv rows -------------------------------------------------------------------------------

def mark_tidy(tidy, selection: Selection):
    """The tidy table with columns `selected` (yes / no for the configurations of a swept method, empty
    otherwise) and `selection` (the criterion), plus one row per candidate run of split
    "selection:val" holding the run's validation value of the criterion."""
    import pandas as pd

    winners = selection.winners()
    cells = {(c.method, c.group): c for c in selection.cells}
    group = list(zip(tidy["dataset"], tidy["backbone"]))
    chosen = [("yes" if winners[(m, g)] == label else "no") if (m, g) in cells else ""
              for m, label, g in zip(tidy["method"], tidy["method_label"], group)]
    tidy = tidy.assign(selected=chosen, selection=[selection.spec.text if c else "" for c in chosen])
    rows = []
    base = tidy.drop_duplicates("run_id").set_index("run_id")
    for c in selection.cells:
        for cand in c.candidates:
            for run_id, _, values in cand.runs:
                if run_id in base.index:
                    row = base.loc[run_id].to_dict()
                    rows.append(dict(row, run_id=run_id, split="selection:val", metric=selection.spec.key,
                                     value=values[selection.spec.key]))
    extra = pd.DataFrame(rows, columns=["run_id", *[c for c in base.columns]]) if rows else None
    return tidy if extra is None else pd.concat([tidy, extra[tidy.columns]], ignore_index=True)


# --- --posthoc best --------------------------------------------------------------------------------

def posthoc_request(posthoc) -> tuple[list, list]:
    """(calibrators to show one block each, candidates of the "best" block or []). "best" chooses among
    the other calibrators given with it, or among every registered one when given alone."""
    from calbench.posthoc import POSTHOC
    from calbench.report.tidy import PosthocSpec, parse_posthoc, parse_posthoc_list

    if posthoc is None or isinstance(posthoc, str):
        parts = [p.strip() for p in (posthoc or "").split(",") if p.strip()]
    else:
        parts = list(posthoc)
    best = any(p == BEST for p in parts)
    specs = parse_posthoc_list(",".join(p.label if isinstance(p, PosthocSpec) else p for p in parts if p != BEST))
    if not best:
        return specs, []
    return specs, specs or [parse_posthoc(name) for name in POSTHOC.names()]


def _split_halves(run, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A permutation seeded by the run id (the same split whatever the report's options)."""
    perm = np.random.default_rng([0, zlib.crc32(run.run_id.encode())]).permutation(n)
    return perm[: n // 2], perm[n // 2:]


def two_fold_score(run, spec, key: str, bins: int = 15) -> float:
    """Mean over the two halves of the run's validation set of `key` on one half after calibrator
    `spec` fitted on the other (nan when it cannot be fitted on a half)."""
    from calbench.metrics import compute_metrics
    from calbench.posthoc import calibrated_scores, create_calibrator
    from calbench.report.tidy import read_predictions

    arrays = read_predictions(run, ("val",))
    logits, labels = arrays["val_logits"], arrays["val_labels"]
    a, b = _split_halves(run, labels.shape[0])
    if min(a.size, b.size) == 0 or logits.ndim != 2:
        return np.nan
    scores = []
    for fit, held in ((a, b), (b, a)):
        try:
            calibrator = create_calibrator(spec.name, **dict(spec.hparams)).fit(logits[fit], labels[fit])
        except InputError:
            return np.nan
        out, kind = calibrated_scores(calibrator, logits[held])
        scores.append(compute_metrics(labels[held], **{kind: out}, bins=bins, keys=(key,))[key])
    return float(np.mean(scores))


def choose_posthoc(results, candidates, spec: SelectSpec, bins: int = 15) -> dict:
    """{(row label, group): (chosen calibrator, {label: mean 2-fold score})} for every cell of `results`."""
    from calbench.report.intervals import cell_runs

    choices = {}
    sign = -1.0 if _higher_is_better(spec.key) else 1.0
    for cell, runs in cell_runs(results).items():
        scores = {c.label: float(np.nanmean([two_fold_score(r, c, spec.key, bins) for r in runs]) if runs else np.nan)
                  for c in candidates}
        finite = [c for c in candidates if np.isfinite(scores[c.label])]
        if finite:
            choices[cell] = (min(finite, key=lambda c: sign * scores[c.label]), scores)
    return choices


def best_posthoc_cells(results, candidates, selection: Selection, *, keys, B: int = 1000, seed: int = 0,
                       ci: float = 0.95, bins: int = 15, reference: str | None = None,
                       interval: str | None = None) -> dict:
    """Cells of the "best" block: each cell's runs after its chosen calibrator (see choose_posthoc);
    the choices go into selection.posthoc. Differences to the reference pair with the reference's
    own chosen calibrator. `interval` (percentile|basic|bca, None: the default) as for every block."""
    import warnings

    from calbench.report.intervals import Cell, cell_runs, estimate_runs, paired_difference, resolve_reference
    from calbench.report.tidy import load_predictions

    kind = {"interval": interval} if interval is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a cell without any fit
        choices = choose_posthoc(results, candidates, selection.spec, bins)
    groups = cell_runs(results)
    preds = {cell: [(r.seed, load_predictions(r, "test", choices[cell][0])) for r in groups[cell]] for cell in choices}
    cells = {}
    for cell, seeded in preds.items():
        est = estimate_runs([p for _, p in seeded], keys=keys, B=B, seed=seed, ci=ci, bins=bins, **kind)
        est.seeds = [s for s, _ in seeded]
        cells[cell] = Cell(est)
    if reference is not None:
        ref = resolve_reference(results, reference)
        for (label, group), cell in cells.items():
            if label != ref and (ref, group) in preds:
                cell.diff = paired_difference(preds[(label, group)], preds[(ref, group)], keys=keys, B=B, seed=seed,
                                              ci=ci, bins=bins, **kind)
    rows, groups = results.methods(), results.groups()
    ordered = sorted(choices, key=lambda c: (rows.index(c[0]) if c[0] in rows else len(rows),
                                             groups.index(c[1]) if c[1] in groups else len(groups)))
    selection.posthoc = [{"row": label, "dataset": g[0], "backbone": g[1], "winner": choices[(label, g)][0].label,
                          "criterion": f"val.{selection.spec.key} (2-fold)", "scores": choices[(label, g)][1]}
                         for label, g in ordered]
    return cells
