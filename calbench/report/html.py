"""One self-contained HTML report of a recipe's results (`calbench report --html PATH`).

A paper's appendix, a review or a colleague needs one file that opens anywhere: no network (figures are
PNG data URIs, the style sheet is inline, no external script or font), readable without JavaScript
(plain tables and headings; a few inline lines make the single-header tables sortable when scripts
run), written atomically (a temporary file and a rename, so a reader never sees half a report).

Sections: the run summary (runs done / failed / unusable / pending / unreadable, wall time, the
calbench and torch versions, git revisions and devices from each run's metrics.json); every table the
caller built (the i.i.d. test table, the post-hoc table); the stored splits other than test (val, shifted
sets: means over seeds of the values metrics.json holds); the rankings (calbench.report.ranking); every
registered figure that can be drawn (calbench.report.figures.FIGURES, called as `calbench plot` would);
the selection record (<results>/<recipe>/selection.json) when there is one; and the metric conventions
from the metric registry (the full text: docs/metrics.md).
"""

from __future__ import annotations

import base64
import datetime
import html
import inspect
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from calbench.errors import CalbenchError
from calbench.report.tables import DASH, ReportTable, group_name, header, metric_display
from calbench.report.tidy import Results

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1400px;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
nav a{margin-right:1em}
.wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0 .6em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f5f7}th[colspan]{text-align:center}summary{cursor:pointer;font-size:.9em}th:first-child,td:first-child{text-align:left}
tr.block-end td{border-bottom:3px double #888}
.ci{color:#666;font-size:.85em}.mark{color:#b03a2e}
ul.notes{font-size:.8em;color:#444;margin-top:0}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;font-size:.9em}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
figure{margin:1em 0;border:1px solid #eee;padding:.5em}figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#444}
.muted{color:#777;font-size:.9em}
th.sortable{cursor:pointer}
"""

# Progressive: without scripts the tables read the same; with them a click on a header of a
# single-header table sorts its rows by that column (numbers numerically).
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('thead th').forEach(function(th,i){th.classList.add('sortable');th.title='sort';
  th.addEventListener('click',function(){var b=t.tBodies[0],rows=Array.from(b.rows),d=th.dataset.dir==='1'?-1:1;
   th.dataset.dir=d===1?'1':'-1';rows.sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent,
   p=parseFloat(a),q=parseFloat(c);return(isNaN(p)||isNaN(q)?a.localeCompare(c):p-q)*d;});
   rows.forEach(function(r){b.appendChild(r);});});});});
"""

E = html.escape


def stored_calibrators(results: Results) -> list[str]:
    """Registered calibrators some finished run stored a test_<name> block for, in registry order."""
    from calbench.posthoc import POSTHOC

    stored = {split[5:] for r in results.done for split in r.metrics if split.startswith("test_")}
    return [name for name in POSTHOC.names() if name in stored]


# --- the run summary -----------------------------------------------------------------------------

def run_records(results: Results) -> list[dict]:
    """Each readable run's metrics.json object (wall time, versions, git revision, device)."""
    out = []
    for r in results.runs:
        try:
            obj = json.loads((r.run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        out.append(obj if isinstance(obj, dict) else {})
    return out


def _distinct(values) -> str:
    seen = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(seen) if seen else "not recorded"


def summary_facts(results: Results) -> list[tuple[str, str]]:
    """(label, value) pairs of the run summary."""
    records = run_records(results)
    wall = [float(o["wall_time_s"]) for o in records if isinstance(o.get("wall_time_s"), (int, float))]
    versions = [o.get("versions") if isinstance(o.get("versions"), dict) else {} for o in records]
    unusable = [r for r in results.runs if r.status == "unusable"]
    failed = [r for r in results.runs if r.status == "failed"]
    return [("recipe", f"{results.recipe} ({results.root / results.recipe})"),
            ("runs done", str(len(results.done))),
            ("runs failed", str(len(failed))),
            ("runs set aside", f"{len(unusable)} (unusable predictions)"),
            ("runs pending", f"{len(results.missing)} (in recipe.json without a finished metrics.json)"),
            ("unreadable metrics.json", str(len(results.corrupt))),
            ("wall time", f"{sum(wall):.1f} s over {len(wall)} run(s)" + (f" (max {max(wall):.1f} s)" if wall else "")),
            ("calbench", _distinct(v.get("calbench") for v in versions)),
            ("torch", _distinct(v.get("torch") for v in versions)),
            ("git revision", _distinct(o.get("git_rev") for o in records)),
            ("device", _distinct(o.get("device") for o in records)),
            ("methods", ", ".join(results.methods())),
            ("dataset / backbone", ", ".join(group_name(g) for g in results.groups()))]


def facts_html(facts) -> str:
    return "<dl class=\"facts\">" + "".join(f"<dt>{E(k)}</dt><dd>{E(v)}</dd>" for k, v in facts) + "</dl>"


def problems_html(results: Results) -> str:
    """Failed and set-aside runs with their reasons (a list; nothing when every run is fine)."""
    items = [f"{r.method_label} on {group_name(r.group)} seed {r.seed}: {r.status}"
             + (f" ({r.reason})" if r.reason else "") for r in results.runs if not r.done]
    items += [f"{path}: unreadable ({why})" for path, why in results.corrupt]
    return notes_html(items)


def notes_html(lines) -> str:
    return "<ul class=\"notes\">" + "".join(f"<li>{E(str(x))}</li>" for x in lines) + "</ul>" if lines else ""


# --- tables ----------------------------------------------------------------------------------------

def _metric_head(key: str) -> str:
    _, percent, higher = metric_display(key)
    return f"{E(header(key))}{' x100' if percent else ''} {'&uarr;' if higher else '&darr;'}"


def _cell_html(table: ReportTable, row: str, group, key: str, rank) -> str:
    parts = table.parts(row, group, key)
    if parts is None:
        return f"<td>{DASH}</td>"
    val, interval, marker = (E(p) for p in parts)
    val = f"<strong>{val}</strong>" if rank == 0 else f"<u>{val}</u>" if rank == 1 else val
    mark = f"<span class=\"mark\">{marker}</span>" if marker else ""
    ci = f" <span class=\"ci\">{interval}</span>" if interval else ""
    return f"<td>{val}{mark}{ci}</td>"


def report_table_html(table: ReportTable) -> str:
    """A ReportTable as an HTML table: a column group per dataset / backbone, a column per metric, best
    bold and second best underlined per column within each row block (as the rich table)."""
    nk = len(table.keys)
    head1 = "<tr><th rowspan=\"2\">method</th>" + "".join(
        f"<th colspan=\"{nk}\">{E(group_name(g))}</th>" for g in table.groups) + "</tr>"
    head2 = "<tr>" + "".join(f"<th>{_metric_head(k)}</th>" for _ in table.groups for k in table.keys) + "</tr>"
    ranks = {(g, k): table.ranks(g, k) for g in table.groups for k in table.keys}
    ends = table.block_ends()
    body = []
    for row in table.rows:
        cells = "".join(_cell_html(table, row, g, k, ranks[(g, k)].get(row)) for g in table.groups for k in table.keys)
        css = ' class="block-end"' if row in ends else ""
        body.append(f"<tr{css}><td>{E(row)}</td>{cells}</tr>")
    return (f"<h3>{E(table.title)}</h3><div class=\"wrap\"><table class=\"report\"><thead>{head1}{head2}</thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{notes_html(table.footer())}")


def simple_table_html(title: str, heads, rows, notes=(), cls: str = "sortable") -> str:
    """A one-header-row table (sortable when scripts run)."""
    head = "".join(f"<th>{E(str(h))}</th>" for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{E(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<h3>{E(title)}</h3><div class=\"wrap\"><table class=\"{cls}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>{notes_html(notes)}")


def stored_split_tables(results: Results, keys) -> list[str]:
    """Per stored split other than test and the calibrators' test_<name> blocks (recomputed in the tables
    above): the mean over done seeds of metrics.json's values, a row per method, a column per cell x metric."""
    tidy = results.tidy()
    if tidy.empty:
        return []
    tidy = tidy[(tidy["status"] == "done") & tidy["metric"].isin(keys)]
    skip = {"test"} | {f"test_{n}" for n in stored_calibrators(results)}
    out = []
    for split in [s for s in dict.fromkeys(tidy["split"]) if s not in skip]:
        part = tidy[tidy["split"] == split]
        means = part.groupby(["method_label", "dataset", "backbone", "metric"])["value"].agg(["mean", "count"])
        groups = [g for g in results.groups() if ((part["dataset"] == g[0]) & (part["backbone"] == g[1])).any()]
        heads = ["method"] + [f"{group_name(g)} {header(k)}" for g in groups for k in keys]
        rows = []
        for method in [m for m in results.methods() if m in set(part["method_label"])]:
            row = [method]
            for g in groups:
                for k in keys:
                    idx = (method, g[0], g[1], k)
                    row.append(_shown_value(k, means["mean"].get(idx)) if idx in means.index else DASH)
            rows.append(row)
        notes = [f"split '{split}': mean over done seeds of the values stored in metrics.json (not recomputed, "
                 "no interval); x100 where the metric is a percentage"]
        out.append(simple_table_html(f"{results.recipe}: stored split {split}", heads, rows, notes))
    return out


def _shown_value(key: str, value) -> str:
    if value is None or not np.isfinite(value):
        return DASH
    percent = metric_display(key)[1]
    return f"{value * 100:.2f}" if percent else f"{value:.3f}"


def rankings_html(rankings) -> str:
    from calbench.report import ranking

    out = []
    for r in rankings:
        heads, rows = ranking.rank_rows(r)
        out.append(simple_table_html(f"{r.title}: average rank over {r.over} (1 = best)", heads, rows))
        heads, rows = ranking.pair_rows(r)
        pairs = simple_table_html(f"{r.title}: pairwise Wilcoxon signed-rank, Holm-adjusted p", heads, rows)
        # many pairs fold away (a <details> element opens without scripts)
        out.append(f"<details{' open' if len(rows) <= 15 else ''}><summary>{len(rows)} pairwise tests</summary>"
                   f"{pairs}</details>{notes_html(ranking.summary_lines(r))}")
    return "".join(out)


# --- selection record and metric conventions ---------------------------------------------------------

def selection_html(results: Results) -> str:
    """The selection record <results>/<recipe>/selection.json as a table (empty when there is none)."""
    path = Path(results.root) / results.recipe / "selection.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict) or not record.get("cells"):
        return ""
    criterion = record.get("criterion") or {}
    key = str(criterion.get("by", "val.nll")).split(".")[-1]
    rows = []
    for cell in record["cells"]:
        for c in cell.get("candidates", []):
            value = (c.get("validation") or {}).get(key)
            rows.append([cell.get("method"), f"{cell.get('dataset')} / {cell.get('backbone')}", c.get("label"),
                         c.get("setting"), _shown_value(key, value) if key in _metric_keys() else value,
                         "selected" if c.get("label") == cell.get("winner") else ""])
    notes = [f"criterion: {json.dumps(criterion)} ({record.get('source', '?')}; {record.get('reads', '')}, "
             f"{record.get('aggregate', '')}; {record.get('direction', '')} is better)", f"record: {path}"]
    notes += [f"{p.get('row')} on {p.get('dataset')} / {p.get('backbone')}: post-hoc best {p.get('winner')}"
              for p in record.get("posthoc_best") or []]
    return simple_table_html("selection on validation", ["method", "dataset / backbone", "candidate", "setting",
                                                         f"val {key}", "winner"], rows, notes)


def _metric_keys() -> list[str]:
    from calbench.metrics import METRICS

    return list(METRICS)


def conventions_html(keys) -> str:
    """Every registered metric's definition, direction and scale (those in the tables first)."""
    from calbench.metrics import METRICS

    order = list(keys) + [k for k in METRICS if k not in keys]
    facts = []
    for k in order:
        spec = METRICS.get(k)
        shown = " (in the tables)" if k in keys else ""
        facts.append((f"{spec.header} [{k}]{shown}", f"{spec.name}: {spec.definition} "
                      f"({'higher' if spec.higher_is_better else 'lower'} is better"
                      f"{'; shown x100' if spec.percent else ''})"))
    return (facts_html(facts) + "<p class=\"muted\">Bins, edges, ties, the %-scale, clipping and the bootstrap: "
            "docs/metrics.md in the calbench repository.</p>")


# --- figures ----------------------------------------------------------------------------------------

FIGURE_OPTIONS = {"B": "B", "seed": "seed", "ci": "ci", "bins": "bins", "metrics": "keys",
                  "all_configs": "all_configs"}


def figure_kwargs(draw, options: dict) -> dict:
    """The report's options a figure's draw function takes (bootstrap, seed, ci, bins, metrics, ...)."""
    params = inspect.signature(draw).parameters
    return {p: options[o] for p, o in FIGURE_OPTIONS.items() if p in params and options.get(o) is not None}


def figures_html(results: Results, options: dict, on_warning=None) -> str:
    """Every registered figure drawn as PNG into a temporary folder and embedded as data URIs; a figure
    with nothing to draw on this store is named with its reason."""
    from calbench.report.figures import FIGURES

    out = []
    with tempfile.TemporaryDirectory(prefix="calbench-html-") as tmp:
        for entry in FIGURES.entries():
            try:
                paths = entry.obj(results, Path(tmp) / entry.name, "png", **figure_kwargs(entry.obj, options))
            except CalbenchError as err:
                out.append(f"<section class=\"figure\" id=\"figure-{E(entry.name)}\"><h3>{E(entry.name)}</h3>"
                           f"<p class=\"muted\">not drawn: {E(str(err))}</p></section>")
                continue
            imgs = "".join(_img(p, entry) for p in paths)
            out.append(f"<section class=\"figure\" id=\"figure-{E(entry.name)}\"><h3>{E(entry.name)}: "
                       f"{E(entry.description)}</h3>{imgs}</section>")
    return "".join(out)


def _img(path: Path, entry) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = f"{path.stem}" + (f" ({entry.paper})" if entry.paper else "")
    return (f"<figure data-figure=\"{E(entry.name)}\"><img alt=\"{E(path.stem)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{E(caption)}</figcaption></figure>")


# --- the document -----------------------------------------------------------------------------------

def render_html(results: Results, tables, rankings, *, options: dict, on_warning=None) -> str:
    """The whole document as a string."""
    import calbench

    keys = tuple(options.get("keys") or (tables[0].keys if tables else ()))
    sections = [("summary", "Run summary", facts_html(summary_facts(results)) + problems_html(results)),
                ("tables", "Tables", "".join(report_table_html(t) for t in tables)
                 + "".join(stored_split_tables(results, keys))),
                ("rankings", "Rankings across settings", rankings_html(rankings)),
                ("figures", "Figures", figures_html(results, options, on_warning)),
                ("selection", "Selection on validation", selection_html(results)
                 or "<p class=\"muted\">No swept method: nothing was selected.</p>"),
                ("conventions", "Metric conventions", conventions_html(keys))]
    nav = "".join(f"<a href=\"#{sid}\">{E(title)}</a>" for sid, title, _ in sections)
    body = "".join(f"<section id=\"{sid}\"><h2>{E(title)}</h2>{content}</section>" for sid, title, content in sections)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    version = getattr(calbench, "__version__", "?")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>calbench report: {E(results.recipe)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>calbench report: {E(results.recipe)}</h1><p class=\"muted\">generated {E(stamp)} by "
            f"calbench {E(str(version))} from {E(str(results.root / results.recipe))}</p><nav>{nav}</nav></header>"
            f"{body}<script>{SCRIPT}</script></body></html>\n")


def write_html(path, results: Results, tables, rankings, *, options: dict, on_warning=None) -> int:
    """Render and write the report to `path` through a temporary file in the same folder and a rename;
    returns its size in bytes."""
    text = render_html(results, tables, rankings, options=options, on_warning=on_warning).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(text)
