"""Published numbers beside ours: `calbench report --paper cals:table1`.

Reported numbers in this field often do not reproduce, and a reader cannot tell from a table alone;
so calbench ships the published tables as package data (calbench/report/papers/*.csv, one file per
paper, columns paper, table, method, dataset, backbone, metric, value, source) and compares every
cell with the store's: ours, the paper's, the difference, and whether the paper's value lies inside
our bootstrap interval (docs/metrics.md); a summary line counts the cells that reproduce.

Names in the files are calbench's: method registry keys (CALS-ALM -> cals-alm), dataset and backbone
names as the recipes use them (recipes/table1.yaml ...), metric registry keys. Values are as the
paper prints them: percent for the metrics calbench shows x100, the plain value otherwise. Only
facts are stored: numbers and where they were printed.

Shipped: the CALS paper (Liu et al., "Class Adaptive Network Calibration", CVPR 2023) Tables 1-3;
for MbLS (Liu et al., "The Devil is in the Margin", CVPR 2022) the authors' evaluation of their
released Tiny-ImageNet ResNet-50 checkpoints (docs/TEST.md of github.com/by-liu/MbLS).

Our side of a cell is the method's row as `calbench report` shows it: its configuration selected on
validation when it is swept (calbench.report.selection), the mean over seeds of the test predictions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from importlib import resources

from calbench.errors import InputError

COLUMNS = ("paper", "table", "method", "dataset", "backbone", "metric", "value", "source")


@dataclass(frozen=True)
class Published:
    """One published cell."""

    paper: str
    table: str
    method: str
    dataset: str
    backbone: str
    metric: str
    value: float
    source: str

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"

    @property
    def group(self) -> tuple[str, str]:
        return (self.dataset, self.backbone)


def published() -> list[Published]:
    """Every shipped published cell, in file order (files sorted by name)."""
    out = []
    folder = resources.files("calbench.report") / "papers"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".csv"):
            continue
        with entry.open(newline="") as fh:
            for row in csv.DictReader(fh):
                out.append(Published(**{k: row[k] for k in COLUMNS if k != "value"}, value=float(row["value"])))
    return out


def paper_keys() -> list[str]:
    """The valid --paper keys ("cals:table1", ...) in file order."""
    return list(dict.fromkeys(p.key for p in published()))


def paper_table(key: str) -> list[Published]:
    """The cells of one published table; InputError (one line naming the valid keys) otherwise."""
    rows = [p for p in published() if p.key == key]
    if not rows:
        from calbench.registry import did_you_mean

        keys = paper_keys()
        raise InputError(f"--paper: unknown published table '{key}'{did_you_mean(str(key), keys)}; "
                         f"valid: {', '.join(keys)}")
    return rows


@dataclass
class Compared:
    """A published cell beside ours (fractions for ours; `scale` turns them into the paper's unit)."""

    cell: Published
    scale: float
    ours: float | None = None
    interval: tuple[float, float] | None = None
    kind: str = ""                # the interval's kind (percentile, basic, bca) when there is one
    status: str = "missing"       # "compared", "missing" (no run), "incomplete" (a seed not done)
    why: str = ""

    @property
    def difference(self) -> float | None:
        return None if self.ours is None else self.ours * self.scale - self.cell.value

    @property
    def inside(self) -> bool | None:
        if self.interval is None:
            return None
        lo, hi = self.interval
        return lo * self.scale <= self.cell.value <= hi * self.scale


def _scale(metric: str) -> float:
    from calbench.metrics import METRICS

    return 100.0 if METRICS.get(metric).percent else 1.0


def _our_cells(results, rows, *, B, seed, ci, bins, interval) -> dict:
    """{(method, group): Cell} of the store's runs in the published table's dataset x backbone groups."""
    from calbench.metrics import METRICS
    from calbench.report.intervals import compute_cells

    groups = {p.group for p in rows}
    sub = replace(results, runs=[r for r in results.runs if r.group in groups])
    keys = tuple(dict.fromkeys(p.metric for p in rows if p.metric in METRICS))
    if not sub.done:
        return {}
    cells = compute_cells(sub, keys=keys, B=B, seed=seed, ci=ci, bins=bins, interval=interval)
    method_of = {r.method_label: r.method for r in sub.runs}
    return {(method_of.get(label, label), group): cell for (label, group), cell in cells.items()}


def compare(results, key: str, *, B: int = 1000, seed: int = 0, ci: float = 0.95, bins: int = 15,
            partial: bool = False, select=None, interval: str | None = None) -> list[Compared]:
    """Every cell of published table `key` beside the store's, each method's row its configuration
    selected on validation (calbench.report.selection; `select` as there) when it is swept; our
    intervals of kind `interval` (None: calbench.metrics' default)."""
    from calbench.metrics.bootstrap import DEFAULT_INTERVAL
    from calbench.report.selection import select_configs
    from calbench.report.tables import cell_problems

    rows = paper_table(key)
    results, _ = select_configs(results, select, bins=bins)   # no-op on results already reduced
    interval = interval or DEFAULT_INTERVAL
    cells = _our_cells(results, rows, B=B, seed=seed, ci=ci, bins=bins, interval=interval)
    method_of = {r.method_label: r.method for r in results.runs}
    problems = {(method_of.get(label, label), group): why for (label, group), why in cell_problems(results).items()}
    out = []
    for p in rows:
        item = Compared(p, _scale(p.metric))
        cell, why = cells.get((p.method, p.group)), problems.get((p.method, p.group))
        if cell is not None and (partial or not why):
            item.ours, item.status = cell.estimate.point[p.metric], "compared"
            item.interval = None if cell.estimate.ci is None else tuple(cell.estimate.ci[p.metric])
            item.kind = "" if item.interval is None else interval
        elif cell is not None or why:
            item.status, item.why = "incomplete", "; ".join(why or [])
        out.append(item)
    return out


def summary(items: list[Compared], key: str, ci: float) -> str:
    """'cals:table1: 12 of 150 cells reproduce (...), 30 outside, 108 missing in the store'."""
    compared = [i for i in items if i.status == "compared"]
    inside = sum(1 for i in compared if i.inside)
    missing = len(items) - len(compared)
    if compared and all(i.inside is None for i in compared):
        head = f"{key}: {len(compared)} of {len(items)} cells compared (no intervals: --bootstrap 0)"
    else:
        kind = next((i.kind + " " for i in compared if i.kind), "")
        head = (f"{key}: {inside} of {len(items)} cells reproduce (the paper's value inside our {ci:.0%} "
                f"{kind}interval), {len(compared) - inside} outside")
    return head + f", {missing} missing in the store" + (" (or incomplete: --partial uses the done seeds)"
                                                       if any(i.status == "incomplete" for i in items) else "")


def _fmt(value: float | None, scale: float, signed: bool = False) -> str:
    if value is None:
        return "-"
    d = 2 if scale > 1 else 3
    return f"{value:+.{d}f}" if signed else f"{value:.{d}f}"


def table_rows(items: list[Compared]) -> list[list[str]]:
    """[cell, method, metric, ours [interval], paper, ours - paper, inside] strings per published cell."""
    out = []
    for i in items:
        p, s = i.cell, i.scale
        ours = i.status if i.ours is None else _fmt(i.ours * s, s)
        if i.interval is not None:
            ours += f" [{_fmt(i.interval[0] * s, s)}, {_fmt(i.interval[1] * s, s)}]"
        inside = "-" if i.inside is None else ("yes" if i.inside else "no")
        out.append([f"{p.dataset} / {p.backbone}", p.method, p.metric + (" x100" if s > 1 else ""), ours,
                    _fmt(p.value, s), _fmt(i.difference, s, signed=True), inside])
    return out


HEADERS = ["dataset / backbone", "method", "metric", "ours [interval]", "paper", "ours - paper", "inside"]


def render_text(items: list[Compared], key: str, ci: float, notes=()) -> str:
    """An aligned plain-text table, the summary line, the source and the selection notes."""
    rows = [HEADERS] + table_rows(items)
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADERS))]
    lines = [f"{key}: ours beside the published values"]
    for n, r in enumerate(rows):
        lines.append("  ".join(v.rjust(w) if c >= 3 else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(summary(items, key, ci))
    lines += [f"source: {s}" for s in dict.fromkeys(i.cell.source for i in items)]
    return "\n".join(lines + list(notes)) + "\n"


def render_markdown(items: list[Compared], key: str, ci: float, notes=()) -> str:
    lines = [f"**{key}: ours beside the published values**", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "---|" * 3 + "---:|" * 3 + "---|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(items)]
    lines += ["", f"- {summary(items, key, ci)}"] + [f"- source: {s}" for s in dict.fromkeys(i.cell.source for i in items)]
    return "\n".join(lines + [f"- {n}" for n in notes]) + "\n"


def render_csv(items: list[Compared]) -> str:
    """One row per published cell; ours, interval and difference on the paper's scale."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["paper", "table", "method", "dataset", "backbone", "metric", "paper_value", "ours", "lo", "hi",
                "interval", "difference", "inside", "status", "source"])
    for i in items:
        p, s = i.cell, i.scale
        lo, hi = (None, None) if i.interval is None else (i.interval[0] * s, i.interval[1] * s)
        w.writerow([p.paper, p.table, p.method, p.dataset, p.backbone, p.metric, p.value,
                    "" if i.ours is None else i.ours * s, "" if lo is None else lo, "" if hi is None else hi, i.kind,
                    "" if i.difference is None else i.difference, "" if i.inside is None else i.inside,
                    i.status, p.source])
    return buf.getvalue()
