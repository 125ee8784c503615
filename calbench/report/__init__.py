"""Results store -> tidy table, interval cells, tables and figures (issue 6).

load_results(results="results", recipe=None) -> Results   (tidy.py; Results.tidy() is the tidy table)
load_predictions(run, split="test", posthoc=None) -> {"labels", "logits"}
compute_cells(results, *, keys, posthoc=None, B=1000, seed=0, ci=0.95, bins=15, reference=None)
build_table(results, cells, *, keys, ...) -> ReportTable; render_rich / render_markdown / render_latex
make_report(...) -> (ReportTable, Results): the whole `calbench report` pipeline
"""

from calbench.report.intervals import Cell, Estimate, compute_cells
from calbench.report.tables import ReportTable, build_table, render_latex, render_markdown, render_rich, render_text
from calbench.report.tidy import Results, Run, load_predictions, load_results

__all__ = ["Cell", "Estimate", "ReportTable", "Results", "Run", "build_table", "compute_cells", "load_predictions",
           "load_results", "render_latex", "render_markdown", "render_rich", "render_text"]
