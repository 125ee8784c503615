"""Compact storage of evaluation sets (calbench.shift.storage): the rows give every metric they
support exactly as the logits do (point and resampled), the report reads them, the rest is the exact
point value stored at evaluation time, shown without an interval."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from calbench.metrics import METRICS, compute_metrics
from calbench.metrics.bootstrap import Resampler, bootstrap_indices, counts_from_indices
from calbench.metrics.inputs import prepare
from calbench.metrics.ood import ood_metrics, ood_scores
from calbench.posthoc import calibrated_scores, fit_calibrator
from calbench.shift.storage import (ROW_NEEDS, RowResampler, bytes_per_sample, calibrated_sets, choose_storage,
                                    compact_arrays, row_supported, stats_from_rows, stored_rows, stored_scores)

ROW_KEYS = tuple(k for k in METRICS.names() if row_supported(k))


def _logits(n=300, k=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = (rng.normal(size=(n, k)) * 2 + 2.5 * np.eye(k)[y]).astype(np.float32)
    return z, y


def test_row_keys_are_the_registry_metrics_without_class_wise_needs():
    assert {"acc", "ece", "aece", "nll", "brier", "smece", "aurc"} <= set(ROW_KEYS)
    assert "cece" not in ROW_KEYS and "tace" not in ROW_KEYS
    assert all(METRICS.get(k).needs <= ROW_NEEDS for k in ROW_KEYS)
    with pytest.raises(ValueError, match="classwise"):
        stats_from_rows({"labels": np.zeros(2, int), "pred": np.zeros(2, int), "conf": np.ones(2),
                         "nll": np.zeros(2), "brier": np.zeros(2)}, 3, 15, {"classwise"})


@pytest.mark.parametrize("calibrator", ["none", "ts", "isotonic"])
def test_compact_rows_give_the_full_logits_metrics(calibrator):
    """Every row-supported metric from the stored rows equals compute_metrics on the same logits (after
    the same clean-validation calibrator), point estimate and resampled (weights and explicit paths)."""
    z, y = _logits()
    val_z, val_y = _logits(seed=1)
    calibrators = {} if calibrator == "none" else {calibrator: fit_calibrator(calibrator, val_z.astype(np.float64), val_y)}
    sets = calibrated_sets(z, calibrators, z.shape[1])
    arrays = compact_arrays(y, sets, labelled=True)
    scores, kind = sets[calibrator]
    rows = stored_rows({**arrays, "labels": y}, calibrator)
    want = compute_metrics(y, **{kind: scores}, keys=ROW_KEYS)
    got = RowResampler(rows, z.shape[1], 15, ROW_KEYS)
    assert got.point == pytest.approx(want, rel=1e-12, abs=1e-12)
    full = Resampler(prepare(y, **{kind: scores}), 15, ROW_KEYS)
    W = counts_from_indices(bootstrap_indices(len(y), 6, 3), len(y))
    a, b = got.stats(W[:, got.order]), full.stats(W[:, full.order])
    for key in ROW_KEYS:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got.explicit(key, W[:2, got.order]), b[key][:2], rtol=1e-10, atol=1e-12,
                                   err_msg=key)


def test_compact_ood_scores_equal_the_scores_of_the_logits():
    z, _ = _logits()
    val_z, val_y = _logits(seed=1)
    ts = fit_calibrator("ts", val_z.astype(np.float64), val_y)
    arrays = compact_arrays(np.full(len(z), -1), calibrated_sets(z, {"ts": ts}, z.shape[1]), labelled=False)
    for calibration, logits in (("none", z.astype(np.float64)), ("ts", calibrated_scores(ts, z)[0])):
        want = ood_scores(logits)
        got = stored_scores(arrays, calibration)
        assert set(got) == set(want)
        for score in want:
            np.testing.assert_allclose(got[score], want[score], rtol=1e-12, err_msg=score)


def test_storage_choice_and_sizes():
    assert choose_storage("auto", 50_000, 1_000, 75) == "compact"        # ImageNet-C: 7.5 GB in float16
    assert choose_storage("auto", 360, 10, 95) == "full"
    assert choose_storage("full", 50_000, 1_000, 75) == "full"
    assert choose_storage("compact", 10, 10, 1) == "compact"
    size = bytes_per_sample(1_000, calibrations=2)
    assert size["full"] == 2008 and 75 * 50_000 * size["compact"] < 2e9 < 75 * 50_000 * size["full"]


def _report(results, split, store_tools):
    _, run_cli, _ = store_tools
    result = run_cli("report", "--results", results, "--split", split, "--csv")
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.output), keep_default_na=False)


def _runs(results):
    return sorted(p for p in (results / "tiny").iterdir() if p.is_dir())


def _label(run):
    return json.loads((run / "metrics.json").read_text())["method_label"]


def _cell(table, method, calibration, severity, metric):
    row = table[(table["method"] == method) & (table["calibration"] == calibration)
                & (table["severity"].astype(str) == str(severity)) & (table["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


def test_compact_store_keeps_rows_not_logits(compact_store):
    for run in _runs(compact_store):
        record = json.loads((run / "eval" / "shift:gaussian_noise:3.json").read_text())
        with np.load(run / "eval" / "shift:gaussian_noise:3.npz") as data:
            assert "logits" not in data.files and str(data["storage"]) == "compact"
            assert {"none.conf", "none.nll", "ts.brier", "ts.energy"} <= set(data.files)
        assert record["storage"] == "compact" and "cece" in record["metrics"]["test_ts"]


def test_compact_report_equals_recomputation_from_rows(compact_store, store_tools):
    shift = _report(compact_store, "shift", store_tools)
    one = _report(compact_store, "shift:pixelate:3", store_tools)
    for run in _runs(compact_store):
        per = {}
        for family in ("gaussian_noise", "pixelate"):
            for s in (1, 3, 5):
                with np.load(run / "eval" / f"shift:{family}:{s}.npz") as data:
                    arrays = {k: data[k] for k in data.files}
                for calibration in ("none", "ts"):
                    rows = stored_rows(arrays, calibration)
                    st = stats_from_rows(rows, 10, 15, ROW_NEEDS)
                    per[(family, s, calibration)] = {k: METRICS.get(k).fn(st, None) for k in ("acc", "ece", "nll")}
        for calibration in ("none", "ts"):
            for key in ("acc", "ece", "nll"):
                want = np.mean([per[(f, 3, calibration)][key] for f in ("gaussian_noise", "pixelate")])
                cell = _cell(shift, _label(run), calibration, 3, key)
                assert cell["mean"] == pytest.approx(want, abs=1e-12) and cell["note"] == ""
                assert cell["lo"] <= cell["hi"]
        record = json.loads((run / "eval" / "shift:pixelate:3.json").read_text())
        cece = _cell(one, _label(run), "ts", 3, "cece")
        assert cece["mean"] == pytest.approx(record["metrics"]["test_ts"]["cece"], abs=1e-15)
        assert cece["note"] == "no interval: compact storage" and cece["lo"] == "" and cece["hi"] == ""
        assert _cell(one, _label(run), "ts", 3, "ece")["mean"] == pytest.approx(per[("pixelate", 3, "ts")]["ece"],
                                                                              abs=1e-12)


def test_compact_report_text_names_the_metric_without_interval(compact_store, store_tools):
    _, run_cli, _ = store_tools
    text = run_cli("report", "--results", compact_store, "--split", "shift:pixelate:3").output
    footnotes = [line for line in text.splitlines() if "no interval: compact storage" in line]
    assert len(footnotes) == 1 and "cECE" in footnotes[0]


def test_compact_ood_report_equals_the_stored_scores(compact_store, store_tools):
    ood = _report(compact_store, "ood", store_tools)
    for run in _runs(compact_store):
        with np.load(run / "predictions.npz") as p:
            clean = p["test_logits"].astype(np.float64)
            ts = fit_calibrator("ts", p["val_logits"].astype(np.float64), p["val_labels"])
        with np.load(run / "eval" / "ood:gaussian.npz") as data:
            arrays = {k: data[k] for k in data.files}
        ins = ood_scores(calibrated_scores(ts, clean)[0])
        outs = stored_scores(arrays, "ts")
        want = ood_metrics(ins["energy"], outs["energy"], keys=["auroc", "fpr95"])
        row = ood[(ood["method"] == _label(run)) & (ood["calibration"] == "ts") & (ood["score"] == "energy")
                  & (ood["set"] == "gaussian")]
        assert dict(zip(row["metric"], row["mean"])) == pytest.approx(want, abs=1e-12)


def test_bad_storage_is_one_line(tmp_path, store_tools):
    SHIFT, run_cli, write_recipe = store_tools
    result = run_cli("run", write_recipe(tmp_path / "t.yaml", {**SHIFT, "storage": "tiny"}), "--dry-run")
    assert result.exit_code == 2 and "storage" in result.output and "Traceback" not in result.output
