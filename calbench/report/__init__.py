"""Results store -> tidy table, interval cells, tables and figures (conventions: docs/metrics.md).

load_results(results="results", recipe=None) -> Results   (tidy.py; Results.tidy() is the tidy table)
load_predictions(run, split="test", posthoc=None) -> {"labels", "logits"} (or "probs" after a calibrator)
calibrated_predictions(run, "ts") -> (labels, scores, "logits" | "probs"): a calibrator refitted on the
    run's saved validation predictions, applied to its test predictions (cached beside the run)
compute_cells(results, *, keys, posthoc=None, B=1000, seed=0, ci=0.95, bins=15, reference=None)
build_table(results, cells, *, keys, ..., blocks=None) -> ReportTable; render_rich / render_markdown / render_latex
calbench.commands.report.make_report(...) -> (ReportTable, Results): the whole `calbench report` pipeline
"""

from calbench.report.intervals import Cell, Estimate, compute_cells
from calbench.report.tables import ReportTable, build_table, render_latex, render_markdown, render_rich, render_text
from calbench.report.tidy import (PosthocSpec, Results, Run, calibrated_predictions, load_predictions, load_results,
                                  parse_posthoc, parse_posthoc_list)

__all__ = ["Cell", "Estimate", "PosthocSpec", "ReportTable", "Results", "Run", "build_table", "calibrated_predictions",
           "compute_cells", "load_predictions", "load_results", "parse_posthoc", "parse_posthoc_list", "render_latex",
           "render_markdown", "render_rich", "render_text"]
