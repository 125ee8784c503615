"""The report table laid out like Table 1 of the CALS paper, and its renderers (rich, markdown, LaTeX).

Rows are methods in recipe order, column groups (dataset, backbone), sub-columns metrics; each cell
is the mean over seeds with its percentile interval. Headers, the x100 scale and the direction of
"best" come from the metric registry (calbench.metrics). With post-hoc calibrators the table holds
one block of rows per calibrator ("ce + ts", ...); best and second best are marked per column within
a block, by point estimate. A cell whose runs are incomplete (a failed, unusable or pending seed) is
a dash unless partial=True, and every missing, failed or partial cell is listed under the table.
Conventions (bins, scale, intervals): docs/metrics.md.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from calbench.report.intervals import Cell
from calbench.report.tidy import Results


def metric_display(key: str) -> tuple[str, bool, bool]:
    """(table header, shown x100, higher is better) of metric `key`, from the metric registry."""
    try:
        from calbench.metrics import METRICS
    except ImportError:  # the metric registry has not landed yet: its compatibility view
        from calbench.metrics import METRIC_INFO

        info = METRIC_INFO[key]
        return info.get("header", key.upper()), bool(info["percent"]), bool(info["higher_is_better"])
    spec = METRICS.get(key)
    return spec.header, bool(spec.percent), bool(spec.higher_is_better)


def header(key: str) -> str:
    return metric_display(key)[0]


DASH = "-"
SIG = "*"  # the difference to the reference excludes 0
PARTIAL = "†"


@dataclass
class ReportTable:
    title: str
    rows: list[str]
    groups: list[tuple[str, str]]
    keys: tuple[str, ...]
    cells: dict  # (row, group) -> Cell (only cells shown)
    notes: list[str] = field(default_factory=list)
    reference: str | None = None
    ci: float = 0.95
    partial: set = field(default_factory=set)  # (row, group) shown from incomplete seeds
    blocks: list = field(default_factory=list)  # row lists, one per calibrator; [] = one block of all rows
    interval: str = "percentile"  # bootstrap interval kind of the cells (calbench.metrics.bootstrap)
    B: int = 0                    # bootstrap resamples (0: point estimates only)
    bins: int = 15

    def row_blocks(self) -> list[list[str]]:
        return self.blocks or [list(self.rows)]

    def scale(self, key: str) -> float:
        return 100.0 if metric_display(key)[1] else 1.0

    def decimals(self, key: str) -> int:
        return 2 if metric_display(key)[1] else 3

    def value(self, row: str, group, key: str) -> float | None:
        """The displayed point estimate (scaled) or None for a missing cell."""
        cell = self.cells.get((row, group))
        return None if cell is None else cell.estimate.point[key] * self.scale(key)

    def ranks(self, group, key: str) -> dict[str, int]:
        """row -> 0 (best) / 1 (second best) by point estimate as displayed, within each row block: rows
        whose shown values tie share the mark (the paper bolds both of two equal 2.45s)."""
        d, higher = self.decimals(key), metric_display(key)[2]
        ranks = {}
        for rows in self.row_blocks():
            shown = {r: round(self.cells[(r, group)].estimate.point[key] * self.scale(key), d)
                     for r in rows if (r, group) in self.cells}
            shown = {r: v for r, v in shown.items() if math.isfinite(v)}  # nan (e.g. no few-shot class) is never best
            best = sorted(set(shown.values()), reverse=higher)[:2]
            ranks.update({r: best.index(v) for r, v in shown.items() if v in best})
        return ranks

    def block_ends(self) -> set[str]:
        """The last row of every block but the final one (renderers draw a rule after it)."""
        return {rows[-1] for rows in self.row_blocks()[:-1] if rows}

    def parts(self, row: str, group, key: str) -> tuple[str, str, str] | None:
        """(value, interval, marker) strings of one cell, or None when missing."""
        cell: Cell | None = self.cells.get((row, group))
        if cell is None:
            return None
        s, d = self.scale(key), self.decimals(key)
        val = f"{cell.estimate.point[key] * s:.{d}f}"
        interval = ""
        if cell.estimate.ci is not None:
            lo, hi = cell.estimate.ci[key]
            interval = f"[{lo * s:.{d}f}, {hi * s:.{d}f}]"
        marker = (SIG if cell.significant(key) else "") + (PARTIAL if (row, group) in self.partial else "")
        return val, interval, marker

    def footer(self) -> list[str]:
        from calbench.metrics.bootstrap import coverage_note
        from calbench.metrics.conventions import convention_note

        shown = f"{self.ci:.0%} {self.interval} bootstrap interval, B={self.B}" if self.B else "no interval"
        lines = [f"cells: mean over seeds [{shown}]; metrics marked x100 are percentages (stored as fractions)",
                 convention_note(self.keys, self.bins), coverage_note(self.interval if self.B else None)]
        if self.reference:
            lines.append(f"{SIG}: the paired {self.ci:.0%} interval of the difference to {self.reference} excludes 0")
        if self.partial:
            lines.append(f"{PARTIAL}: mean over the done seeds only")
        return lines + self.notes


def group_name(group) -> str:
    return f"{group[0]} / {group[1]}"


def cell_problems(results: Results) -> dict:
    """(method label, group) -> why some of its seeds are not in the cell (failed, unusable, not run)."""
    problems: dict = {}
    for r in results.failed:
        why = f"seed {r.seed} {r.status}" + (f" ({r.reason})" if r.reason else "") + f" [{r.run_id}]"
        problems.setdefault((r.method_label, r.group), []).append(why)
    for m in results.missing:
        if m.get("method_label") and m.get("dataset"):
            key = (m["method_label"], (m["dataset"], m.get("backbone", "?")))
            problems.setdefault(key, []).append(f"seed {m.get('seed', '?')} {m.get('why', 'not run')} [{m.get('run_id')}]")
    return problems


def _arrange(rows, groups, cells: dict, problems: dict, partial: bool, suffix: str = ""):
    """(shown cells, partial cells, notes) of one block; its rows are named `row + suffix`."""
    shown, marked, notes = {}, set(), []
    for row in rows:
        for g in groups:
            cell, why = cells.get((row, g)), problems.get((row, g), [])
            key = (row + suffix, g)
            if cell is not None and (not why or partial):
                shown[key] = cell
                if why:
                    marked.add(key)
            if cell is None or why:
                shown_as = "partial" if key in shown else "missing"
                notes.append(f"{shown_as}: {row + suffix} on {group_name(g)}: {'; '.join(why) if why else 'no run'}")
    return shown, marked, notes


def build_table(results: Results, cells: dict | None = None, *, keys, ci: float = 0.95,
                reference: str | None = None, blocks: dict | None = None, partial: bool = False) -> ReportTable:
    """Arrange computed cells into rows/groups; drop or mark incomplete cells and write the notes.

    cells: {(method label, group): Cell} of the raw test predictions; or blocks: {calibrator label:
    such cells} in order, one row block per calibrator with rows "<method> + <calibrator>"."""
    methods, groups, problems = results.methods(), results.groups(), cell_problems(results)
    parts = {None: cells or {}} if blocks is None else blocks
    shown, marked, notes, row_blocks = {}, set(), [], []
    for label, block_cells in parts.items():
        suffix = "" if label is None else f" + {label}"
        block_shown, block_marked, block_notes = _arrange(methods, groups, block_cells, problems, partial, suffix)
        shown.update(block_shown)
        marked |= block_marked
        if not row_blocks:  # the same seeds are missing in every block: say so once
            notes += block_notes
        row_blocks.append([m + suffix for m in methods])
    unlisted = [m for m in results.missing if not (m.get("method_label") and m.get("dataset"))]
    if unlisted:
        notes.append(f"pending: {len(unlisted)} run(s) of recipe.json without metrics.json: "
                     + ", ".join(str(m.get("run_id")) for m in unlisted))
    title = f"{results.recipe}: test" + ("" if blocks is None else f" after post-hoc {', '.join(blocks)}")
    rows = [r for block in row_blocks for r in block]
    return ReportTable(title, rows, groups, tuple(keys), shown, notes, reference, ci, marked,
                       blocks=row_blocks if blocks is not None else [])


def render_rich(table: ReportTable):
    """A rich.table.Table: header lines 'dataset / backbone' over the metric name."""
    from rich.table import Table

    t = Table(title=table.title, title_justify="left")
    t.add_column("method", no_wrap=True)
    for g in table.groups:
        for k in table.keys:
            unit = " x100" if metric_display(k)[1] else ""
            t.add_column(f"{group_name(g)}\n{header(k)}{unit}", justify="right")
    ranks = {(g, k): table.ranks(g, k) for g in table.groups for k in table.keys}
    ends = table.block_ends()
    for row in table.rows:
        out = [row]
        for g in table.groups:
            for k in table.keys:
                p = table.parts(row, g, k)
                if p is None:
                    out.append(DASH)
                    continue
                val, interval, marker = p
                rank = ranks[(g, k)].get(row)
                val = f"[bold]{val}[/bold]" if rank == 0 else f"[underline]{val}[/underline]" if rank == 1 else val
                out.append(f"{val}{marker} {interval}".rstrip())
        t.add_row(*out, end_section=row in ends)
    return t


def print_rich(table: ReportTable, console) -> None:
    """The rich table, then its legend and notes as unwrapped lines (run ids must stay whole)."""
    from rich.markup import escape

    console.print(render_rich(table))
    for line in table.footer():
        console.print(escape(line), soft_wrap=True)


def render_text(table: ReportTable, width: int = 250) -> str:
    """The rich table and notes as plain text (for -o FILE)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    print_rich(table, Console(file=buf, width=width, color_system=None, force_terminal=False))
    return buf.getvalue()


def render_markdown(table: ReportTable) -> str:
    """A GitHub markdown table; best **bold**, second <u>underlined</u> (as the paper's markdown)."""
    heads = ["method"] + [f"{group_name(g)} {header(k)}" for g in table.groups for k in table.keys]
    lines = [f"**{table.title}**", "", "| " + " | ".join(heads) + " |",
             "|" + "---|" + "---:|" * (len(heads) - 1)]
    ranks = {(g, k): table.ranks(g, k) for g in table.groups for k in table.keys}
    for row in table.rows:
        out = [row.replace("|", "\\|")]
        for g in table.groups:
            for k in table.keys:
                p = table.parts(row, g, k)
                if p is None:
                    out.append(DASH)
                    continue
                val, interval, marker = p
                rank = ranks[(g, k)].get(row)
                val = f"**{val}**" if rank == 0 else f"<u>{val}</u>" if rank == 1 else val
                marker = f"<sup>{marker}</sup>" if marker else ""
                out.append(f"{val}{marker} {interval}".rstrip())
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    lines += [f"- {line}" for line in table.footer()]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(s))


def render_latex(table: ReportTable) -> str:
    """A booktabs table: multicolumn group headers with cmidrules, best \\textbf, second \\underline,
    the interval in \\scriptsize after the value (percentile intervals are asymmetric, so [lo, hi]
    rather than \\pm)."""
    nk = len(table.keys)
    spec = "l" + "".join(" " + "c" * nk for _ in table.groups)
    lines = [r"\begin{table}[t]", r"\centering", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{tex_escape(table.title)}. Mean over seeds with the {int(round(table.ci * 100))}\% "
             r"bootstrap interval in brackets; best in bold, second best underlined.}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    heads = [""] + [rf"\multicolumn{{{nk}}}{{c}}{{{tex_escape(group_name(g))}}}" for g in table.groups]
    lines.append(" & ".join(heads) + r" \\")
    rules = [rf"\cmidrule(lr){{{2 + i * nk}-{1 + (i + 1) * nk}}}" for i in range(len(table.groups))]
    lines.append(" ".join(rules))
    sub = ["Method"] + [tex_escape(header(k)) + (r" ($\uparrow$)" if metric_display(k)[2]
                                                 else r" ($\downarrow$)")
                        for _ in table.groups for k in table.keys]
    lines.append(" & ".join(sub) + r" \\")
    lines.append(r"\midrule")
    ranks = {(g, k): table.ranks(g, k) for g in table.groups for k in table.keys}
    for row in table.rows:
        out = [tex_escape(row)]
        for g in table.groups:
            for k in table.keys:
                p = table.parts(row, g, k)
                if p is None:
                    out.append("--")
                    continue
                val, interval, marker = p
                rank = ranks[(g, k)].get(row)
                val = rf"\textbf{{{val}}}" if rank == 0 else rf"\underline{{{val}}}" if rank == 1 else val
                mark = ""
                if SIG in marker:
                    mark += r"$^{*}$"
                if PARTIAL in marker:
                    mark += r"$^{\dagger}$"
                iv = rf"{{\scriptsize\,{interval}}}" if interval else ""
                out.append(f"{val}{mark}{iv}")
        lines.append(" & ".join(out) + r" \\")
        if row in table.block_ends():
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}"]
    foot = [tex_escape(x).replace(tex_escape(PARTIAL), r"$^{\dagger}$") for x in table.footer()[1:]]
    if foot:
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(foot) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
