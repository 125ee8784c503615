"""`calbench report`: formats, cell values traced to metrics.json and predictions, intervals, robustness."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.errors import InputError
from calbench.metrics import bootstrap_indices, compute_metrics
from calbench.report import compute_cells, load_predictions, load_results
from calbench.report.intervals import estimate_runs, paired_difference
from calbench.report.tables import render_latex

from conftest import make_store


def invoke(*args):
    """click >= 8.2: result.stdout and result.stderr are kept apart."""
    return CliRunner().invoke(cli, ["report", *args])


@pytest.mark.parametrize("fmt", [[], ["--latex"], ["--markdown"], ["--csv"]])
def test_every_format_succeeds(store, fmt):
    res = invoke("--results", str(store), "--bootstrap", "50", *fmt)
    assert res.exit_code == 0, res.output
    assert "cals-alm(margin=10)" in res.stdout


def test_latex_is_balanced_booktabs(store):
    res = invoke("--results", str(store), "--bootstrap", "50", "--latex", "--reference", "ce")
    assert res.exit_code == 0, res.output
    tex = res.stdout
    depth = 0
    for i, ch in enumerate(tex):
        if ch in "{}" and (i == 0 or tex[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            assert depth >= 0
    assert depth == 0
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex and r"\underline{" in tex


def test_cell_mean_equals_metrics_json_mean(store):
    """The markdown cell of ce on digits/mlp is the mean over seeds of the runs' metrics.json ece x100."""
    res = invoke("--results", str(store), "--bootstrap", "0", "--markdown", "--metrics", "acc,ece")
    assert res.exit_code == 0, res.output
    vals = []
    for p in (store / "quickstart").glob("*/metrics.json"):
        obj = json.loads(p.read_text())
        if obj["method"] == "ce":
            vals.append(obj["metrics"]["test"]["ece"])
    assert len(vals) == 2
    row = next(line for line in res.stdout.splitlines() if line.startswith("| ce |"))
    cell = row.split("|")[3].strip().strip("*<u>/")
    assert float(cell) == pytest.approx(100 * np.mean(vals), abs=0.006)
    assert f"{100 * np.mean(vals):.2f}" in row


def test_recomputed_points_equal_metrics_json(store):
    results = load_results(store)
    cells = compute_cells(results, keys=("acc", "ece", "aece", "nll"), B=0)
    cells_ts = compute_cells(results, keys=("acc", "ece", "aece", "nll"), B=0, posthoc="ts")
    n = 0
    for (label, group), cell in cells.items():
        runs = sorted((r for r in results.done if r.method_label == label and r.group == group), key=lambda r: r.seed)
        for run, point, point_ts in zip(runs, cell.estimate.per_run, cells_ts[(label, group)].estimate.per_run):
            for k, v in point.items():
                # bit for bit: the same float32 logits (and float64 / T -> float32 for TS) as the engine used
                assert v == run.metrics["test"][k]
                assert point_ts[k] == run.metrics["test_ts"][k]
                n += 1
    assert n == 4 * 2 * 4


def slow_bootstrap(labels, logits, B, seed, ci, key):
    idx = bootstrap_indices(labels.size, B, seed)
    stats = [compute_metrics(labels[row], logits=logits[row], keys=(key,))[key] for row in idx]
    return tuple(np.percentile(stats, [50 * (1 - ci), 50 * (1 + ci)]))


def test_sample_level_interval_equals_slow_bootstrap(store_factory):
    root = store_factory(seeds=(0,), methods=(("ce", "ce", {}),), n=90)
    results = load_results(root)
    (cell,) = compute_cells(results, keys=("acc", "ece", "aece"), B=200, seed=7, ci=0.9).values()
    pred = load_predictions(results.done[0])
    for key in ("acc", "ece", "aece"):
        lo, hi = slow_bootstrap(pred["labels"], pred["logits"], 200, 7, 0.9, key)
        assert cell.estimate.ci[key] == pytest.approx((lo, hi), abs=1e-12)
    # counts are exact sums: the same resampled indices give bit-identical intervals; other metrics differ
    # from the loop only by float summation order (~1e-16)
    assert cell.estimate.ci["acc"] == slow_bootstrap(pred["labels"], pred["logits"], 200, 7, 0.9, "acc")


def test_two_level_interval_equals_slow_loop(store_factory):
    """The cell interval of several seeds against a Python loop over the two-level stream of METRICS.md:
    rng draws the seeds (B, S) first, then run by run the sample indices of each of its drawn copies."""
    root = store_factory(seeds=(0, 1, 2), methods=(("ce", "ce", {}),), n=50)
    results = load_results(root)
    (cell,) = compute_cells(results, keys=("acc", "ece", "aece"), B=120, seed=5, ci=0.9).values()
    preds = [load_predictions(r) for r in sorted(results.done, key=lambda r: r.seed)]
    B, S, keys = 120, 3, ("acc", "ece", "aece")
    rng = np.random.default_rng(5)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in keys}
    for s, p in enumerate(preds):
        owner = np.nonzero(drawn.ravel() == s)[0] // S
        for j, row in zip(owner, rng.integers(0, 50, (owner.size, 50))):
            m = compute_metrics(p["labels"][row], logits=p["logits"][row], keys=keys)
            for k in keys:
                sums[k][j] += m[k]
    point = {k: np.mean([compute_metrics(p["labels"], logits=p["logits"], keys=keys)[k] for p in preds]) for k in keys}
    for k in keys:
        assert cell.estimate.ci[k] == pytest.approx(tuple(np.percentile(sums[k] / S, [5, 95])), abs=1e-12)
        assert cell.estimate.point[k] == pytest.approx(point[k], abs=1e-15)


def test_two_level_and_paired_intervals(store):
    results = load_results(store)
    runs = sorted((r for r in results.done if r.method == "ce"), key=lambda r: r.seed)
    ref = sorted((r for r in results.done if r.method == "cals-alm"), key=lambda r: r.seed)
    a = [(r.seed, load_predictions(r)) for r in runs]
    b = [(r.seed, load_predictions(r)) for r in ref]
    est = estimate_runs([p for _, p in a], keys=("ece",), B=300, seed=1)
    assert est.n_runs == 2 and est.ci["ece"][0] <= est.ci["ece"][1]
    diff = paired_difference(a, b, keys=("acc", "ece"), B=300, seed=1)
    # the paired difference of a method with itself is exactly zero in every resample
    same = paired_difference(a, a, keys=("ece",), B=100, seed=1)
    assert same.ci["ece"] == (0.0, 0.0) and same.point["ece"] == 0.0
    # point = mean over seeds of the per-seed differences
    per = [compute_metrics(pa["labels"], logits=pa["logits"], keys=("acc",))["acc"]
           - compute_metrics(pb["labels"], logits=pb["logits"], keys=("acc",))["acc"] for (_, pa), (_, pb) in zip(a, b)]
    assert diff.point["acc"] == pytest.approx(np.mean(per), abs=1e-12)


def test_reference_marks_cells(store):
    res = invoke("--results", str(store), "--bootstrap", "200", "--markdown", "--reference", "ce")
    assert res.exit_code == 0, res.output
    assert "difference to ce excludes 0" in res.stdout
    ce_row = next(line for line in res.stdout.splitlines() if line.startswith("| ce |"))
    assert "*" not in ce_row.replace("**", "")


def test_corrupt_and_failed_runs(store_factory):
    root = store_factory(failed={("ls(alpha=0.05)", "digits", 1)}, corrupt={("ce", "digits", 0)})
    res = invoke("--results", str(root), "--bootstrap", "50", "--markdown")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "metrics.json" in line]
    assert len(warnings) == 1 and "unreadable" in warnings[0]
    corrupt_path = [p for p in (root / "quickstart").glob("*/metrics.json") if not _readable(p)]
    assert len(corrupt_path) == 1 and str(corrupt_path[0]) in warnings[0]
    row = next(line for line in res.stdout.splitlines() if line.startswith("| ls(alpha=0.05) |"))
    assert row.split("|")[2].strip() == "-"
    assert "missing: ls(alpha=0.05) on digits / mlp: seed 1 failed" in res.stdout
    assert "missing: ce on digits / mlp: seed 0 unreadable metrics.json" in res.stdout
    # the other methods are untouched
    row = next(line for line in res.stdout.splitlines() if line.startswith("| mbls(margin=10) |"))
    assert row.split("|")[2].strip() != "-"
    # the default rich table too
    res = invoke("--results", str(root), "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "ls(alpha=0.05)" in line and "│" in line)
    assert [c.strip() for c in row.split("│")[2:5]] == ["-", "-", "-"]
    assert "missing: ls(alpha=0.05) on digits / mlp: seed 1 failed (loss became nan at epoch 2)" in res.stdout
    assert len([line for line in res.stderr.splitlines() if "unreadable" in line]) == 1
    # --partial shows the done seed instead, marked
    res = invoke("--results", str(root), "--bootstrap", "50", "--markdown", "--partial")
    row = next(line for line in res.stdout.splitlines() if line.startswith("| ls(alpha=0.05) |"))
    assert "†" in row


def _readable(p):
    try:
        json.loads(p.read_text())
        return True
    except ValueError:
        return False


def test_csv_is_the_tidy_table(store):
    res = invoke("--results", str(store), "--csv")
    assert res.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 4 * 2 * 3 * 9  # runs x splits x metrics
    tidy = load_results(store).tidy()
    assert len(tidy) == len(rows) and set(tidy["split"]) == {"test", "test_ts", "val"}


def test_user_errors_are_one_line(tmp_path, store):
    for args in (["--results", str(tmp_path / "none")], ["--results", str(store), "--recipe", "quickstrat"],
                 ["--results", str(store), "--metrics", "eec"], ["--results", str(store), "--reference", "xx"]):
        res = invoke(*args)
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("calbench: error:")
    assert "did you mean 'quickstart'" in invoke("--results", str(store), "--recipe", "quickstrat").stderr
    with pytest.raises(InputError):
        load_results(tmp_path / "none")


def test_output_file(store, tmp_path):
    out = tmp_path / "t.tex"
    res = invoke("--results", str(store), "--bootstrap", "20", "--latex", "-o", str(out))
    assert res.exit_code == 0 and out.read_text().startswith(r"\begin{table}")
    out = tmp_path / "t.txt"
    assert invoke("--results", str(store), "--bootstrap", "20", "-o", str(out)).exit_code == 0
    assert "cals-alm(margin=10)" in out.read_text()
    assert render_latex  # imported API


def test_paired_two_level_equals_slow_loop(store_factory):
    """paired_seed_bootstrap against a Python loop over the same generator stream (seeds drawn first,
    then each pair's sample indices, shared by a and b)."""
    from calbench.report.intervals import paired_seed_bootstrap

    root = store_factory(seeds=(0, 1, 2), methods=(("ce", "ce", {}), ("ls", "ls", {})), n=60)
    results = load_results(root)
    by = {m: sorted((r for r in results.done if r.method == m), key=lambda r: r.seed) for m in ("ce", "ls")}
    pairs = [(load_predictions(a), load_predictions(b)) for a, b in zip(by["ce"], by["ls"])]
    B, seed, S, keys = 150, 3, 3, ("acc", "ece", "aece")
    est = paired_seed_bootstrap(pairs, keys=keys, B=B, seed=seed, ci=0.9)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in keys}
    for s, (a, b) in enumerate(pairs):
        owner = np.nonzero(drawn.ravel() == s)[0] // S
        idx = rng.integers(0, 60, (owner.size, 60))
        for j, row in zip(owner, idx):
            ma = compute_metrics(a["labels"][row], logits=a["logits"][row], keys=keys)
            mb = compute_metrics(b["labels"][row], logits=b["logits"][row], keys=keys)
            for k in keys:
                sums[k][j] += ma[k] - mb[k]
    for k in keys:
        lo, hi = np.percentile(sums[k] / S, [5, 95])
        assert est.ci[k] == pytest.approx((lo, hi), abs=1e-12)


def test_quickstart_sized_report_is_fast(tmp_path):
    """66 runs (11 methods x 2 datasets x 3 seeds, 360 test samples, K = 10), B = 1000: under 30 s."""
    import time

    methods = tuple((f"m{i}", f"m{i}", {}) for i in range(11))
    root = make_store(tmp_path / "results", methods=methods, datasets=(("digits", "mlp"), ("digits-lt", "mlp")),
                      seeds=(0, 1, 2), n=360, k=10, epochs=2)
    t0 = time.perf_counter()
    res = invoke("--results", str(root), "--bootstrap", "1000")
    elapsed = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert res.stdout.count("[") >= 66 and elapsed < 30, elapsed


def test_metrics_json_disagreeing_with_predictions_is_warned(store):
    path = sorted((store / "quickstart").glob("*/metrics.json"))[0]
    obj = json.loads(path.read_text())
    obj["metrics"]["test"]["ece"] += 0.01
    path.write_text(json.dumps(obj))
    res = invoke("--results", str(store), "--bootstrap", "0", "--markdown")
    assert res.exit_code == 0
    (line,) = [x for x in res.stderr.splitlines() if "recomputed" in x]
    assert str(path) in line and "test ece" in line


def test_best_and_second_marks_follow_direction_and_ties():
    """acc: higher is better; ece: lower is better; equal displayed values share the mark."""
    from calbench.report.intervals import Cell, Estimate
    from calbench.report.tables import ReportTable

    g = ("digits", "mlp")
    points = {"a": {"acc": 0.90, "ece": 0.0245}, "b": {"acc": 0.95, "ece": 0.02451}, "c": {"acc": 0.93, "ece": 0.03},
              "d": {"acc": 0.80, "ece": 0.05}}
    cells = {(r, g): Cell(Estimate(p, None, 1)) for r, p in points.items()}
    table = ReportTable("t", list(points), [g], ("acc", "ece"), cells)
    assert table.ranks(g, "acc") == {"b": 0, "c": 1}
    assert table.ranks(g, "ece") == {"a": 0, "b": 0, "c": 1}  # 2.45 and 2.45 tie as shown
    tex = render_latex(table)
    assert tex.count(r"\textbf{2.45}") == 2 and r"\underline{3.00}" in tex and r"\textbf{95.00}" in tex
