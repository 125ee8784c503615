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
from calbench.metrics.registry import default_keys
from calbench.posthoc import POSTHOC, Calibrator
from calbench.report import compute_cells, load_predictions, load_results, tidy
from calbench.report.tidy import calibrated_predictions, parse_posthoc
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
    """The cell interval of several seeds against a Python loop over the two-level stream of docs/metrics.md:
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
    assert len(rows) == 4 * 2 * 3 * len(default_keys(False))  # runs x splits x default metrics
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


def test_nan_cells_are_never_marked_best():
    """A metric undefined for some rows (no few-shot class: nan) ranks only the rows that have it."""
    from calbench.report.intervals import Cell, Estimate
    from calbench.report.tables import ReportTable

    g = ("digits", "mlp")
    points = {"a": {"ece": float("nan")}, "b": {"ece": 0.03}, "c": {"ece": float("nan")}, "d": {"ece": 0.02}}
    cells = {(r, g): Cell(Estimate(p, None, 1)) for r, p in points.items()}
    table = ReportTable("t", list(points), [g], ("ece",), cells)
    assert table.ranks(g, "ece") == {"d": 0, "b": 1}
    only_nan = ReportTable("t", ["a", "c"], [g], ("ece",), {k: v for k, v in cells.items() if k[0] in "ac"})
    assert only_nan.ranks(g, "ece") == {}


# --- post-hoc calibrators refitted at report time ---------------------------------------------

def _block_rows(stdout, suffix):
    return [line for line in stdout.splitlines() if line.startswith("| ") and f" + {suffix} |" in line]


@pytest.mark.parametrize("name", POSTHOC.names())
def test_every_registered_calibrator_reports_on_runs_that_never_asked_for_it(store, name):
    """The store's runs were trained with posthoc: [ts] only; any registered calibrator still applies."""
    res = invoke("--results", str(store), "--bootstrap", "0", "--markdown", "--posthoc", name)
    assert res.exit_code == 0, res.output
    assert len(_block_rows(res.stdout, name)) == 4
    assert not res.stderr.strip(), res.stderr


def test_one_row_block_per_calibrator_in_the_order_given(store):
    res = invoke("--results", str(store), "--bootstrap", "0", "--markdown", "--posthoc", "vs,ts")
    assert res.exit_code == 0, res.output
    rows = [line.split("|")[1].strip() for line in res.stdout.splitlines() if " + " in line and line.startswith("|")]
    assert rows == [f"{m} + {c}" for c in ("vs", "ts") for m in ("ce", "ls(alpha=0.05)", "mbls(margin=10)",
                                                                 "cals-alm(margin=10)")]
    tex = invoke("--results", str(store), "--bootstrap", "0", "--latex", "--posthoc", "vs,ts").stdout
    assert tex.count(r"\midrule") == 2  # under the header and between the two blocks


def test_refit_ts_equals_the_stored_test_ts_block(store):
    results = load_results(store)
    keys = ("acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece")
    cells = compute_cells(results, keys=keys, B=0, posthoc="ts")
    for (label, group), cell in cells.items():
        runs = sorted((r for r in results.done if r.method_label == label and r.group == group), key=lambda r: r.seed)
        for run, point in zip(runs, cell.estimate.per_run):
            for k in keys:
                assert point[k] == pytest.approx(run.metrics["test_ts"][k], abs=1e-12, rel=0)


def test_state_is_cached_beside_the_run_and_reused(store):
    run = load_results(store).done[0]
    labels, first, kind = calibrated_predictions(run, "vs")
    (path,) = (run.run_dir / "posthoc").glob("vs-*.json")
    state = json.loads(path.read_text())
    assert state["name"] == "vs" and kind == "logits"
    # a cached state is used as is: doctor it and the transform follows it
    state["params"]["bias"] = [b + 1.0 for b in state["params"]["bias"]]
    path.write_text(json.dumps(state))
    tidy._FITTED.clear()
    _, second, _ = calibrated_predictions(run, "vs")
    np.testing.assert_allclose(second, (first.astype(np.float64) + 1.0).astype(np.float32), atol=1e-5)
    # a garbage cache file is refitted and overwritten
    path.write_text("{not json")
    tidy._FITTED.clear()
    _, third, _ = calibrated_predictions(run, "vs")
    np.testing.assert_array_equal(third, first)
    assert json.loads(path.read_text())["name"] == "vs"


def test_cache_key_changes_with_the_validation_data_and_the_version(store, monkeypatch):
    run = load_results(store).done[0]
    preds = dict(np.load(run.run_dir / "predictions.npz"))
    spec = parse_posthoc("ts")
    key = tidy.cache_path(run, spec, {}, preds["val_logits"], preds["val_labels"])
    changed = preds["val_logits"].copy()
    changed[0, 0] += 1.0
    assert tidy.cache_path(run, spec, {}, changed, preds["val_labels"]) != key
    monkeypatch.setattr(POSTHOC.get("ts"), "version", POSTHOC.get("ts").version + 1)
    assert tidy.cache_path(run, spec, {}, preds["val_logits"], preds["val_labels"]) != key


def test_fit_ignores_the_test_split(store):
    run = load_results(store).done[0]
    tidy._FITTED.clear()
    before = tidy.fitted_calibrator(run, "vs").state()
    preds = dict(np.load(run.run_dir / "predictions.npz"))
    preds["test_logits"] = preds["test_logits"][::-1] * 3.0
    np.savez(run.run_dir / "predictions.npz", **preds)
    for cached in (run.run_dir / "posthoc").glob("*.json"):
        cached.unlink()
    tidy._FITTED.clear()
    assert tidy.fitted_calibrator(run, "vs").state() == before


def test_read_only_store_still_reports(store):
    import os
    import stat

    modes = {}
    for d in (store / "quickstart").iterdir():
        if d.is_dir():
            modes[d] = d.stat().st_mode
            d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(next(iter(modes)), os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        res = invoke("--results", str(store), "--bootstrap", "0", "--markdown", "--posthoc", "ts")
        assert res.exit_code == 0, res.output
        assert not any((d / "posthoc").exists() for d in modes)
    finally:
        for d, mode in modes.items():
            d.chmod(mode)


def test_unwritable_cache_folder_is_skipped(store):
    """A cache that cannot be written (here: a file where the posthoc folder belongs) is skipped."""
    for d in (store / "quickstart").iterdir():
        if d.is_dir():
            (d / "posthoc").write_text("in the way")
    res = invoke("--results", str(store), "--bootstrap", "0", "--markdown", "--posthoc", "ts,vs")
    assert res.exit_code == 0, res.output


class _Probs(Calibrator):
    """softmax(z / scale): a calibrator that outputs probabilities, with one hyper-parameter."""

    output = "probs"
    preserves_argmax = True

    def __init__(self, *, scale: float = 2.0):
        self.scale = scale

    def fit_arrays(self, logits, labels):
        pass

    def transform_array(self, logits):
        from scipy.special import softmax

        return softmax(logits / self.scale, axis=1)

    def params(self):
        return {}

    def load_params(self, params):
        pass


@pytest.fixture
def probs_calibrator():
    POSTHOC.register("probs-test", _Probs)
    yield "probs-test"
    POSTHOC._entries.pop("probs-test")


def test_probability_calibrator_with_hyper_parameter_flows_into_the_report(store, probs_calibrator):
    res = invoke("--results", str(store), "--bootstrap", "30", "--markdown", "--reference", "ce",
                 "--metrics", "acc,ece,nll,brier,cece,smece", "--posthoc", f"{probs_calibrator}:scale=3")
    assert res.exit_code == 0, res.output
    assert len(_block_rows(res.stdout, "probs-test(scale=3)")) == 4
    run = load_results(store).done[0]
    labels, probs, kind = calibrated_predictions(run, f"{probs_calibrator}:scale=3")
    logits = np.load(run.run_dir / "predictions.npz")["test_logits"]
    assert kind == "probs"
    assert compute_metrics(labels, probs=probs) == compute_metrics(labels, probs=_Probs(scale=3.0).transform_array(
        logits.astype(np.float64)))
    csv_text = invoke("--results", str(store), "--csv", "--posthoc", f"{probs_calibrator}:scale=3").stdout
    rows = [r for r in csv.DictReader(io.StringIO(csv_text)) if r["split"] == "posthoc:probs-test(scale=3)"]
    assert len(rows) == 8 * len(default_keys(False))


@pytest.mark.parametrize("value, message", [
    ("unknown", "unknown post-hoc calibrator 'vss' (did you mean 'vs'?)"),
    ("hparam", "ts: unknown hyper-parameter 'bins'"),
    ("kind", "probs-test.scale: expected a number, got 'big'"),
    ("syntax", "expected NAME:KEY=VALUE"),
])
def test_bad_calibrator_input_is_one_line(store, probs_calibrator, value, message):
    arg = {"unknown": "ts,vss", "hparam": "ts:bins=3", "kind": f"{probs_calibrator}:scale=big",
           "syntax": "ts:bins"}[value]
    res = invoke("--results", str(store), "--bootstrap", "0", "--posthoc", arg)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("calbench: error:") and message in line


def test_store_without_validation_predictions_is_one_line(store):
    for path in (store / "quickstart").glob("*/predictions.npz"):
        arrays = dict(np.load(path))
        np.savez(path, test_logits=arrays["test_logits"], test_labels=arrays["test_labels"])
    res = invoke("--results", str(store), "--bootstrap", "0", "--posthoc", "ts")
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("calbench: error:") and "no run has validation predictions" in line
    assert invoke("--results", str(store), "--bootstrap", "0").exit_code == 0  # raw test still reports


# --- damaged store files: one warning line naming the file, the rest reported ----------------

def _damage_metrics_list(run_dir):
    (run_dir / "metrics.json").write_text("[]")
    return run_dir / "metrics.json"


def _damage_metric_string(run_dir):
    obj = json.loads((run_dir / "metrics.json").read_text())
    obj["metrics"]["test"]["ece"] = "0.05"
    (run_dir / "metrics.json").write_text(json.dumps(obj))
    return run_dir / "metrics.json"


def _damage_truncated_npz(run_dir):
    path = run_dir / "predictions.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _damage_empty_npz(run_dir):
    (run_dir / "predictions.npz").write_bytes(b"")
    return run_dir / "predictions.npz"


def _damage_shapes(run_dir):
    arrays = dict(np.load(run_dir / "predictions.npz"))
    arrays["test_labels"] = arrays["test_labels"][:-3]
    np.savez(run_dir / "predictions.npz", **arrays)
    return run_dir / "predictions.npz"


def _damage_recipe_json(run_dir):
    (run_dir.parent / "recipe.json").write_text("[]")
    return run_dir.parent / "recipe.json"


DAMAGE = {"metrics.json = []": _damage_metrics_list, "a string metric value": _damage_metric_string,
          "truncated predictions.npz": _damage_truncated_npz, "empty predictions.npz": _damage_empty_npz,
          "wrong prediction shapes": _damage_shapes, "recipe.json = []": _damage_recipe_json}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("fmt", [["--markdown"], ["--csv"], ["--markdown", "--posthoc", "ts,vs"]])
def test_a_damaged_file_is_one_warning_and_the_rest_is_reported(store, damage, fmt):
    run_dir = next(d for d in sorted((store / "quickstart").iterdir()) if d.is_dir())
    path = DAMAGE[damage](run_dir)
    res = invoke("--results", str(store), "--bootstrap", "0", *fmt)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if fmt == ["--csv"] and path.name == "predictions.npz":
        assert lines == []  # the CSV is the stored metrics: predictions are not read
    else:
        assert len(lines) == 1 and lines[0].startswith("calbench: warning:") and str(path) in lines[0], lines
    others = [d for d in (store / "quickstart").iterdir() if d.is_dir() and d != run_dir]
    if fmt[0] == "--markdown":
        assert res.stdout.count("|") > 20 and "mbls(margin=10)" in res.stdout
    else:
        ids = {r["run_id"] for r in csv.DictReader(io.StringIO(res.stdout))}
        assert {d.name for d in others} <= ids


def test_nothing_usable_left_is_exit_2(store):
    for d in (store / "quickstart").iterdir():
        if d.is_dir():
            _damage_truncated_npz(d)
    res = invoke("--results", str(store), "--bootstrap", "0")
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("calbench: error:") and "no finished runs to report" in line and "predictions.npz" in line
