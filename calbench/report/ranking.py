"""Rankings across settings: average ranks, the Friedman test and pairwise Wilcoxon tests with Holm's
correction (Demsar, "Statistical comparisons of classifiers over multiple data sets", JMLR 7, 2006).

A table's numbers say how methods compare on one dataset x backbone; a ranking says how they compare
across all of them. For each metric the methods (the rows of one block of a report table) are ranked
within every block of the comparison, rank 1 the best by the metric's direction in the registry
(calbench.metrics.METRICS: higher_is_better), tied values sharing their average rank (Demsar, Sec. 3.2.2).

What a block is (`over`):
- "cells" (the default): one block per dataset x backbone cell, a method's value the mean over its
  seeds, as the report table shows it. Demsar's tests assume independent blocks, and seeds of one
  dataset are not independent datasets, so this is the honest unit.
- "seeds": one block per (dataset, backbone, seed) that every method has. Use it when a store has too
  few cells (one or two); the tests then speak about these settings and seeds, not about new datasets.
Only blocks where every method has a value are used (a complete-block design); those left out are named.

Tests, per metric:
- Friedman: scipy.stats.friedmanchisquare over the blocks (Demsar Eq. 1, with scipy's tie correction);
  not defined with fewer than 3 methods or 2 blocks.
- pairwise Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided; zero differences dropped, Wilcoxon's
  rule) on the per-block differences of each pair, p-values adjusted by Holm's step-down procedure
  (Holm 1979), which controls the family-wise error over all pairs of one metric.
- the Nemenyi critical difference CD = q_alpha sqrt(k (k + 1) / (6 N)) (Demsar Eq. 5) with
  q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2), used by the critical-difference diagram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from calbench.report.tables import ReportTable, group_name, metric_display

OVER = ("cells", "seeds")


@dataclass
class Pair:
    """Wilcoxon signed-rank test of rows a and b over the blocks; better: the row with the lower mean rank."""

    a: str
    b: str
    statistic: float
    p: float
    p_holm: float = math.nan
    better: str | None = None


@dataclass
class MetricRanking:
    key: str
    methods: list[str]
    blocks: list[str]
    values: np.ndarray  # (blocks, methods), fractions as the metric returns them
    ranks: np.ndarray   # (blocks, methods), 1 = best, ties averaged
    friedman: tuple[float, float] | None = None  # (chi-square, p)
    friedman_note: str = ""
    pairs: list[Pair] = field(default_factory=list)

    @property
    def mean_ranks(self) -> dict[str, float]:
        return {m: float(r) for m, r in zip(self.methods, self.ranks.mean(0))} if len(self.blocks) else {}

    def critical_difference(self, alpha: float = 0.05) -> float:
        return nemenyi_cd(len(self.methods), len(self.blocks), alpha)


@dataclass
class Ranking:
    """The rankings of one row block of a report table (raw test predictions, or one calibrator)."""

    title: str
    over: str
    metrics: list[MetricRanking]
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05


def rank_values(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks within each row of a (blocks, methods) matrix, 1 = best, ties sharing their average rank."""
    from scipy.stats import rankdata

    oriented = -values if higher_is_better else values
    return rankdata(oriented, axis=1, method="average") if values.size else np.zeros(values.shape)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending p_(1) <= ... <= p_(m), the adjusted p_(i) is
    max over j <= i of min(1, (m - j + 1) p_(j)); reject where adjusted < alpha (Holm 1979)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks for k methods over n blocks (Demsar Eq. 5);
    nan when k < 2 or n < 1."""
    if k < 2 or n < 1:
        return math.nan
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def friedman(values: np.ndarray) -> tuple[tuple[float, float] | None, str]:
    """((chi-square, p), "") of scipy.stats.friedmanchisquare over the blocks, or (None, why not)."""
    from scipy.stats import friedmanchisquare

    n, k = values.shape
    if k < 3 or n < 2:
        return None, f"Friedman test not defined for {k} method(s) over {n} block(s) (needs 3 methods, 2 blocks)"
    if np.all(values == values[:, :1]):
        return None, "Friedman test not defined: every method ties in every block"
    with np.errstate(all="ignore"):
        stat, p = friedmanchisquare(*values.T)
    return (float(stat), float(p)), ""


def wilcoxon_pairs(values: np.ndarray, methods: list[str], mean_ranks: np.ndarray) -> list[Pair]:
    """Two-sided Wilcoxon signed-rank test for every pair of methods, Holm-adjusted over the pairs; a pair
    whose differences are all zero gets p = 1 (no evidence of a difference)."""
    from scipy.stats import wilcoxon

    pairs = []
    for i in range(len(methods)):
        for j in range(i + 1, len(methods)):
            diff = values[:, i] - values[:, j]
            if not np.any(diff != 0):
                stat, p = 0.0, 1.0
            else:
                res = wilcoxon(values[:, i], values[:, j])
                stat, p = float(res.statistic), float(res.pvalue)
            better = None if mean_ranks[i] == mean_ranks[j] else methods[i] if mean_ranks[i] < mean_ranks[j] \
                else methods[j]
            pairs.append(Pair(methods[i], methods[j], stat, p, better=better))
    for pair, adjusted in zip(pairs, holm([p.p for p in pairs]) if pairs else []):
        pair.p_holm = float(adjusted)
    return pairs


def block_values(table: ReportTable, rows: list[str], key: str, over: str) -> tuple[list[str], np.ndarray, list]:
    """(block names, (blocks, rows) values, names of incomplete blocks left out) of metric `key`."""
    blocks: dict[str, dict[str, float]] = {}
    for g in table.groups:
        for row in rows:
            cell = table.cells.get((row, g))
            if cell is None:
                continue
            est = cell.estimate
            if over == "cells":
                blocks.setdefault(group_name(g), {})[row] = est.point[key]
                continue
            for seed, point in zip(est.seeds, est.per_run):
                blocks.setdefault(f"{group_name(g)} / seed {seed}", {})[row] = point[key]
        if over == "cells":
            blocks.setdefault(group_name(g), {})
    complete = [b for b, v in blocks.items() if all(r in v and np.isfinite(v[r]) for r in rows)]
    left_out = [b for b in blocks if b not in complete]
    values = np.array([[blocks[b][r] for r in rows] for b in complete], dtype=float).reshape(len(complete), len(rows))
    return complete, values, left_out


def rank_metric(table: ReportTable, rows: list[str], key: str, over: str) -> tuple[MetricRanking, list]:
    """The ranking of `rows` by metric `key` and the incomplete blocks left out."""
    blocks, values, left_out = block_values(table, rows, key, over)
    ranks = rank_values(values, metric_display(key)[2])
    result = MetricRanking(key, list(rows), blocks, values, ranks)
    result.friedman, result.friedman_note = friedman(values)
    if blocks:
        result.pairs = wilcoxon_pairs(values, list(rows), ranks.mean(0))
    return result, left_out


def rank_table(table: ReportTable, *, over: str = "cells", alpha: float = 0.05) -> list[Ranking]:
    """One Ranking per row block of the table (a block per calibrator after --posthoc), each metric of
    the table ranked over the blocks `over` names ("cells" or "seeds")."""
    if over not in OVER:
        from calbench.errors import InputError

        raise InputError(f"--rank: unknown block kind '{over}'; valid: {', '.join(OVER)}")
    rankings = []
    for rows in table.row_blocks():
        metrics, notes = [], []
        for key in table.keys:
            result, left_out = rank_metric(table, rows, key, over)
            metrics.append(result)
            if left_out and not notes:
                notes.append(f"left out (not every method has a value): {', '.join(left_out)}")
        suffix = rows[0].split(" + ", 1)[1] if table.blocks and " + " in rows[0] else ""
        title = f"{table.title.split(':')[0]}: ranks on test" + (f" after {suffix}" if suffix else "")
        rankings.append(Ranking(title, over, metrics, notes, alpha))
    return rankings



def rank_results(results, *, keys, over: str = "cells", posthoc=None, bins: int = 15, all_configs: bool = False,
                 alpha: float = 0.05, on_warning=None) -> list[Ranking]:
    """The rankings of a store as `calbench report --rank` computes them, for callers without a report
    table (the critical-difference figure): swept methods reduced to the configuration selected on
    validation (nothing written), point estimates recomputed from the saved test predictions (after
    calibrator `posthoc` if given), incomplete cells left out."""
    from calbench.report.intervals import compute_cells
    from calbench.report.selection import choose_configs, restrict
    from calbench.report.tables import build_table

    if not all_configs:
        results = restrict(results, choose_configs(results, None, bins=bins, on_warning=on_warning))
    cells = compute_cells(results, keys=tuple(keys), posthoc=posthoc, B=0, bins=bins)
    return rank_table(build_table(results, cells, keys=tuple(keys)), over=over, alpha=alpha)

# --- rendering -----------------------------------------------------------------------------------

def _p(p: float) -> str:
    return "-" if not np.isfinite(p) else f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def summary_lines(ranking: Ranking) -> list[str]:
    """One line per metric: blocks, the Friedman test (or why it is not defined) and the Nemenyi CD."""
    lines = []
    for m in ranking.metrics:
        head = metric_display(m.key)[0]
        what = f"{len(m.blocks)} block(s) ({ranking.over})"
        test = (f"Friedman chi2 = {m.friedman[0]:.3f}, p = {_p(m.friedman[1])}" if m.friedman
                else m.friedman_note)
        cd = m.critical_difference(ranking.alpha)
        lines.append(f"{head}: {what}; {test}" + (f"; Nemenyi CD = {cd:.2f} at alpha {ranking.alpha}"
                                                   if np.isfinite(cd) else ""))
    lines.append("ranks: 1 = best by the metric's direction (docs/metrics.md), ties averaged; pairwise: two-sided "
                 "Wilcoxon signed-rank over the blocks, p Holm-adjusted over the pairs of each metric "
                 f"(* below {ranking.alpha}); better: the lower mean rank")
    return lines + ranking.notes


def rank_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the average-rank table: a method per row, a metric per column."""
    heads = ["method"] + [metric_display(m.key)[0] for m in ranking.metrics]
    methods = ranking.metrics[0].methods if ranking.metrics else []
    rows = []
    for method in methods:
        rows.append([method] + [f"{m.mean_ranks[method]:.2f}" if m.blocks else "-" for m in ranking.metrics])
    return heads, rows


def pair_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the pairwise table: a pair per row; per metric the Holm-adjusted p and the better one."""
    heads = ["pair"] + [f"{metric_display(m.key)[0]} p (Holm)" for m in ranking.metrics]
    first = ranking.metrics[0].pairs if ranking.metrics else []
    rows = []
    for i, pair in enumerate(first):
        out = [f"{pair.a} vs {pair.b}"]
        for m in ranking.metrics:
            p = m.pairs[i]
            star = "*" if p.p_holm < ranking.alpha else ""
            out.append(f"{_p(p.p_holm)}{star}" + (f" ({p.better})" if p.better else ""))
        rows.append(out)
    return heads, rows


def print_rich(rankings: list[Ranking], console) -> None:
    """Each ranking as two rich tables (average ranks; pairwise adjusted p) and its summary lines."""
    from rich.markup import escape
    from rich.table import Table

    for ranking in rankings:
        for title, (heads, rows) in ((f"{ranking.title}: average rank over {ranking.over}", rank_rows(ranking)),
                                     (f"{ranking.title}: pairwise Wilcoxon, Holm-adjusted p", pair_rows(ranking))):
            console.print(f"[bold]{escape(title)}[/bold]", soft_wrap=True)  # a title never wraps
            t = Table()
            for i, h in enumerate(heads):
                t.add_column(escape(h), justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                t.add_row(*(escape(c) for c in row))
            console.print(t)
        for line in summary_lines(ranking):
            console.print(escape(line), soft_wrap=True)


def render_text(rankings: list[Ranking], width: int = 200) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    print_rich(rankings, Console(file=buf, width=width, color_system=None, force_terminal=False))
    return buf.getvalue()


def render_markdown(rankings: list[Ranking]) -> str:
    out = []
    for ranking in rankings:
        for title, (heads, rows) in ((f"{ranking.title}: average rank over {ranking.over}", rank_rows(ranking)),
                                     (f"{ranking.title}: pairwise Wilcoxon, Holm-adjusted p", pair_rows(ranking))):
            out += [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
        out += [f"- {line}" for line in summary_lines(ranking)] + [""]
    return "\n".join(out)


def to_csv(rankings: list[Ranking]) -> str:
    """Tidy rows: kind (rank / friedman / pair), block title, metric, method or pair, value columns."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["ranking", "over", "metric", "kind", "method", "other", "statistic", "p", "p_holm", "mean_rank",
                "blocks"])
    for r in rankings:
        for m in r.metrics:
            for method, rank in m.mean_ranks.items():
                w.writerow([r.title, r.over, m.key, "rank", method, "", "", "", "", rank, len(m.blocks)])
            stat, p = m.friedman if m.friedman else ("", "")
            w.writerow([r.title, r.over, m.key, "friedman", "", "", stat, p, "", "", len(m.blocks)])
            for pair in m.pairs:
                w.writerow([r.title, r.over, m.key, "wilcoxon", pair.a, pair.b, pair.statistic, pair.p, pair.p_holm,
                            "", len(m.blocks)])
    return buf.getvalue()
