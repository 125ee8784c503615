"""`calbench report --rank` and the critical-difference figure: average ranks, the Friedman test and
Holm-adjusted pairwise Wilcoxon tests agree with scipy.stats applied by hand to the store's numbers."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from calbench.cli import cli
from calbench.metrics import METRICS
from calbench.report.ranking import holm, nemenyi_cd, rank_values

FIVE = (("ce", "ce", {}), ("ls", "ls(alpha=0.05)", {"alpha": 0.05}), ("fl", "fl(gamma=3)", {"gamma": 3}),
        ("mbls", "mbls(margin=10)", {"margin": 10.0}))
CELLS = tuple((name, "mlp") for name in ("a", "b", "c", "d", "e", "f"))
KEYS = ("acc", "ece", "nll")


def report(*args):
    return CliRunner().invoke(cli, ["report", *args])


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    from conftest import make_store

    return make_store(tmp_path_factory.mktemp("rank") / "results", methods=FIVE, datasets=CELLS, seeds=(0, 1),
                      n=150, seed=3)


def stored_values(root: Path, key: str, per_seed: bool) -> tuple[list[str], np.ndarray]:
    """(methods, (blocks, methods) values) read straight from every run's metrics.json."""
    by_block: dict = {}
    for path in sorted((root / "quickstart").glob("*/metrics.json")):
        run = json.loads(path.read_text())
        block = (run["dataset"], run["seed"]) if per_seed else run["dataset"]
        by_block.setdefault(block, {}).setdefault(run["method_label"], []).append(run["metrics"]["test"][key])
    methods = [label for _, label, _ in FIVE]
    return methods, np.array([[np.mean(v[m]) for m in methods] for _, v in sorted(by_block.items())])


def holm_by_hand(p: list[float]) -> list[float]:
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    adjusted = [0.0] * m
    for pos, i in enumerate(order):
        adjusted[i] = max(min(1.0, (m - j) * p[order[j]]) for j in range(pos + 1))
    return adjusted


def ranking_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("over", ["cells", "seeds"])
def test_ranks_friedman_and_wilcoxon_holm_agree_with_scipy(wide_store, over):
    res = report("--results", str(wide_store), "--metrics", ",".join(KEYS), "--rank", over, "--csv")
    assert res.exit_code == 0, res.output
    rows = ranking_rows(res.stdout)
    for key in KEYS:
        methods, values = stored_values(wide_store, key, per_seed=over == "seeds")
        assert values.shape == (len(CELLS) * (2 if over == "seeds" else 1), len(FIVE))
        oriented = -values if METRICS.get(key).higher_is_better else values
        expected_ranks = stats.rankdata(oriented, axis=1).mean(0)
        got = {r["method"]: float(r["mean_rank"]) for r in rows if r["metric"] == key and r["kind"] == "rank"}
        assert got == pytest.approx(dict(zip(methods, expected_ranks)), abs=1e-12)
        (fried,) = [r for r in rows if r["metric"] == key and r["kind"] == "friedman"]
        chi2, p = stats.friedmanchisquare(*values.T)
        assert float(fried["statistic"]) == pytest.approx(chi2, rel=1e-9)
        assert float(fried["p"]) == pytest.approx(p, rel=1e-9)
        pairs = [r for r in rows if r["metric"] == key and r["kind"] == "wilcoxon"]
        assert len(pairs) == len(FIVE) * (len(FIVE) - 1) // 2
        raw = [stats.wilcoxon(values[:, methods.index(r["method"])], values[:, methods.index(r["other"])]).pvalue
               for r in pairs]
        assert [float(r["p"]) for r in pairs] == pytest.approx(raw, rel=1e-9)
        assert [float(r["p_holm"]) for r in pairs] == pytest.approx(holm_by_hand(raw), rel=1e-9)


def test_the_rank_table_is_printed_with_adjusted_p_values(wide_store):
    res = report("--results", str(wide_store), "--rank")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "average rank over cells" in out and "pairwise Wilcoxon, Holm-adjusted p" in out
    assert all(label in out for _, label, _ in FIVE)
    assert out.count("Friedman chi2 =") == 3  # the default metrics acc, ece, aece
    md = report("--results", str(wide_store), "--rank", "--markdown").stdout
    assert "| ce vs ls(alpha=0.05) |" in md and "| method | Acc | ECE | AECE |" in md


def test_ranks_follow_the_metric_direction_and_average_ties():
    values = np.array([[0.9, 0.8, 0.8, 0.7]])
    assert rank_values(values, higher_is_better=True).tolist() == [[1.0, 2.5, 2.5, 4.0]]
    assert rank_values(values, higher_is_better=False).tolist() == [[4.0, 2.5, 2.5, 1.0]]


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
    assert holm([0.04, 0.01, 0.2]).tolist() == pytest.approx(holm_by_hand([0.04, 0.01, 0.2]))


def test_nemenyi_critical_difference_matches_demsar():
    # Demsar (2006), Sec. 3.2.2: four classifiers on 14 data sets, q_0.05 = 2.569, CD = 1.25
    assert nemenyi_cd(4, 14, 0.05) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), abs=1e-3)
    assert round(nemenyi_cd(4, 14, 0.05), 2) == 1.25
    assert math.isnan(nemenyi_cd(1, 5))


def test_friedman_is_not_defined_for_two_methods_or_one_cell(store_factory):
    root = store_factory(methods=FIVE[:2], datasets=CELLS[:3])
    res = report("--results", str(root), "--rank")
    assert res.exit_code == 0, res.output
    assert "Friedman test not defined for 2 method(s)" in res.stdout.replace("\n", " ")
    root = store_factory(recipe="one", methods=FIVE, datasets=CELLS[:1])
    res = report("--results", str(root), "--recipe", "one", "--rank", "--csv")
    assert res.exit_code == 0, res.output
    assert all(r["p"] == "" for r in ranking_rows(res.stdout) if r["kind"] == "friedman")
    per_seed = ranking_rows(report("--results", str(root), "--recipe", "one", "--rank", "seeds", "--csv").stdout)
    assert all(r["p"] != "" for r in per_seed if r["kind"] == "friedman")


def test_rank_with_latex_is_one_line(store):
    res = report("--results", str(store), "--rank", "--latex")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "--rank" in res.stderr


def test_cliques_join_methods_closer_than_the_critical_difference():
    from calbench.report.figures.rank import cliques

    assert cliques([1.0, 1.5, 2.9, 3.2], 1.0) == [(0, 1), (2, 3)]
    assert cliques([1.0, 1.5, 1.9, 4.0], 1.0) == [(0, 2)]
    assert cliques([1.0, 3.0], 1.0) == []


def test_plot_rank_writes_one_diagram_per_metric(wide_store, tmp_path):
    res = CliRunner().invoke(cli, ["plot", "rank", "--results", str(wide_store), "-o", str(tmp_path),
                                   "--metrics", "ece,acc", "--posthoc", "ts"])
    assert res.exit_code == 0, res.output
    paths = [Path(line) for line in res.stdout.split()]
    assert [p.name for p in paths] == ["rank_ece_cells_ts.png", "rank_acc_cells_ts.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
