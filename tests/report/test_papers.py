"""Published tables beside ours: the shipped CSVs use calbench's names, and `report --paper` prints
ours / paper / difference / inside-interval for every published cell of a store in Table 1's layout."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.report import compute_cells, load_results
from calbench.report.papers import COLUMNS, compare, paper_keys, paper_table, published, summary
from calbench.report.selection import select_configs

from conftest import make_store

TABLE1_GROUPS = (("tiny-imagenet", "resnet50-tiny"), ("imagenet", "resnet50"))
TABLE1_METHODS = (("ce", "ce", {}), ("ls", "ls(alpha=0.05)", {"alpha": 0.05}),
                  ("mbls", "mbls(margin=5)", {"margin": 5.0}), ("mbls", "mbls(margin=10)", {"margin": 10.0}),
                  ("cals-alm", "cals-alm(margin=10)", {"margin": 10.0}))


@pytest.fixture
def table1_store(tmp_path):
    """Two of Table 1's five cells, one seed, 200 classes; mmce, ecp, ... absent (shown as missing)."""
    return make_store(tmp_path / "results", recipe="table1", methods=TABLE1_METHODS, datasets=TABLE1_GROUPS,
                      seeds=(0,), k=200, n=300)


def invoke(*args):
    return CliRunner().invoke(cli, ["report", *args])


def test_shipped_tables_use_registered_names():
    from calbench.data import DATASETS
    from calbench.methods import METHODS
    from calbench.metrics import METRICS
    from calbench.models import is_backbone

    rows = published()
    assert rows and paper_keys()[:3] == ["cals:table1", "cals:table2", "cals:table3"]
    for p in rows:
        assert p.method in METHODS and p.metric in METRICS and p.dataset in DATASETS.names(), p
        assert is_backbone(p.backbone) and math.isfinite(p.value) and p.source
        assert 0 <= p.value <= (100 if METRICS.get(p.metric).percent else 10), p
    cells = [(p.key, p.method, p.group, p.metric) for p in rows]
    assert len(cells) == len(set(cells))  # one value per published cell


def test_shipped_files_have_the_columns_and_the_paper_layout():
    folder = Path(__file__).resolve().parents[2] / "calbench" / "report" / "papers"
    for path in folder.glob("*.csv"):
        with path.open(newline="") as fh:
            assert tuple(next(csv.reader(fh))) == COLUMNS
    # Table 1: 10 methods x 5 dataset/backbone cells x (Acc, ECE, AECE); Table 2: 6 x (ECE, mIoU); Table 3: 9 x 2
    assert [len(paper_table(k)) for k in ("cals:table1", "cals:table2", "cals:table3")] == [150, 12, 18]
    value = {(p.method, p.group, p.metric): p.value for p in paper_table("cals:table1")}
    assert value[("cals-alm", ("tiny-imagenet", "resnet50-tiny"), "ece")] == 1.54
    assert value[("ce", ("imagenet-lt", "swinv2_tiny_window8_256"), "aece")] == 36.68


def test_paper_comparison_on_a_table1_store(table1_store):
    res = invoke("--results", str(table1_store), "--paper", "cals:table1", "--bootstrap", "200")
    assert res.exit_code == 0, res.output
    results, _ = select_configs(load_results(table1_store))
    method_of = {r.method_label: r.method for r in results.runs}
    cells = {(method_of[label], group): cell
             for (label, group), cell in compute_cells(results, keys=("acc", "ece", "aece"), B=200).items()}
    items = compare(load_results(table1_store), "cals:table1", B=200)
    lines = res.stdout.splitlines()
    assert len(items) == 150
    for item in items:
        p = item.cell
        line = next(x for x in lines if x.startswith(f"{p.dataset} / {p.backbone} ") and x.split()[3] == p.method
                    and x.split()[4] == p.metric)
        cell = cells.get((p.method, p.group))
        if cell is None:
            assert item.status == "missing" and " missing " in line
            continue
        ours, (lo, hi) = cell.estimate.point[p.metric] * 100, cell.estimate.ci[p.metric]
        assert item.ours * 100 == pytest.approx(ours) and item.difference == pytest.approx(ours - p.value)
        assert item.inside == (lo * 100 <= p.value <= hi * 100)
        assert f"{ours:.2f} [{lo * 100:.2f}, {hi * 100:.2f}]" in line and f"{p.value:.2f}" in line
        assert line.rstrip().endswith("yes" if item.inside else "no") and f"{ours - p.value:+.2f}" in line
    compared = [i for i in items if i.status == "compared"]
    assert len(compared) == 4 * 2 * 3  # ce, ls, mbls (selected), cals-alm on two cells
    inside = sum(i.inside for i in compared)
    assert (f"cals:table1: {inside} of 150 cells reproduce (the paper's value inside our 95% percentile interval), "
            f"{len(compared) - inside} outside, 126 missing in the store") in res.stdout
    assert "mbls on tiny-imagenet / resnet50-tiny: margin=" in res.stdout  # the selected configuration's note


def test_paper_value_inside_interval_is_detected(table1_store, monkeypatch):
    """A published value placed at our point estimate reproduces; one far off does not."""
    from calbench.report import papers

    results = load_results(table1_store)
    real = papers.published()
    ce_acc = compute_cells(results, keys=("acc",), B=100)[("ce", TABLE1_GROUPS[0])].estimate.point["acc"]
    fake = [p for p in real if p.key == "cals:table1" and p.method == "ce" and p.group == TABLE1_GROUPS[0]]
    fake = [papers.Published(**{**p.__dict__, "value": ce_acc * 100 if p.metric == "acc" else 99.0}) for p in fake]
    monkeypatch.setattr(papers, "published", lambda: fake)
    items = compare(results, "cals:table1", B=100)
    assert {i.cell.metric: i.inside for i in items} == {"acc": True, "ece": False, "aece": False}
    assert summary(items, "cals:table1", 0.95).startswith("cals:table1: 1 of 3 cells reproduce")


def test_wrong_paper_key_is_one_line(table1_store):
    res = invoke("--results", str(table1_store), "--paper", "cals:table9")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "cals:table1, cals:table2, cals:table3" in res.stderr


def test_paper_csv_and_markdown(table1_store):
    res = invoke("--results", str(table1_store), "--paper", "cals:table1", "--bootstrap", "50", "--csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 150 and {r["status"] for r in rows} == {"compared", "missing"}
    for r in rows:
        if r["status"] == "compared":
            assert float(r["difference"]) == pytest.approx(float(r["ours"]) - float(r["paper_value"]))
            assert float(r["lo"]) <= float(r["hi"])
    res = invoke("--results", str(table1_store), "--paper", "cals:table1", "--bootstrap", "0", "--markdown")
    assert res.exit_code == 0 and res.stdout.count("\n| ") == 151 and "no intervals" in res.stdout


def test_incomplete_cell_is_not_compared(tmp_path):
    root = make_store(tmp_path / "results", recipe="table1", methods=TABLE1_METHODS[:2], datasets=TABLE1_GROUPS[:1],
                      seeds=(0, 1), k=200, n=200, failed={("ce", "tiny-imagenet", 1)})
    items = {(i.cell.method, i.cell.metric): i for i in compare(load_results(root), "cals:table1", B=0)
             if i.cell.group == TABLE1_GROUPS[0]}
    assert items[("ce", "acc")].status == "incomplete" and "seed 1 failed" in items[("ce", "acc")].why
    assert items[("ls", "acc")].status == "compared"
    partial = compare(load_results(root), "cals:table1", B=0, partial=True)
    assert next(i for i in partial if i.cell.method == "ce" and i.cell.group == TABLE1_GROUPS[0]).status == "compared"


def test_paper_intervals_follow_interval_option(table1_store):
    """`--paper` shows the interval kind asked for: basic intervals are the percentile ones reflected
    about the point estimate (2 theta - q_hi, 2 theta - q_lo), and the CSV and summary name the kind."""
    def rows(kind):
        res = invoke("--results", str(table1_store), "--paper", "cals:table1", "--bootstrap", "50", "--csv",
                     "--interval", kind)
        assert res.exit_code == 0, res.output
        return [r for r in csv.DictReader(io.StringIO(res.stdout)) if r["status"] == "compared"]
    pct, basic = rows("percentile"), rows("basic")
    assert {r["interval"] for r in pct} == {"percentile"} and {r["interval"] for r in basic} == {"basic"}
    for p, b in zip(pct, basic):
        ours = float(p["ours"])
        assert float(b["lo"]) == pytest.approx(2 * ours - float(p["hi"]), abs=1e-9)
        assert float(b["hi"]) == pytest.approx(2 * ours - float(p["lo"]), abs=1e-9)
    text = invoke("--results", str(table1_store), "--paper", "cals:table1", "--bootstrap", "50",
                  "--interval", "basic").stdout
    assert "inside our 95% basic interval" in text
