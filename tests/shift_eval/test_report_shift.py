"""`report --split` numbers equal metrics recomputed here from the saved evaluation predictions;
`plot shift` renders headless."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from calbench.metrics import compute_metrics
from calbench.metrics.ood import ood_metrics, ood_scores
from calbench.posthoc import calibrated_scores, fit_calibrator


def _runs(results):
    return sorted(p for p in (results / "tiny").iterdir() if p.is_dir())


def _label(run_dir):
    import json

    return json.loads((run_dir / "metrics.json").read_text())["method_label"]


def _saved(run_dir, set_id):
    with np.load(run_dir / "eval" / f"{set_id}.npz") as data:
        return data["logits"].astype(np.float64), data["labels"]


def _report(results, split, store_tools):
    _, run_cli, _ = store_tools
    result = run_cli("report", "--results", results, "--split", split, "--csv")
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.output), keep_default_na=False)


def _cell(table, method, calibration, severity, metric):
    row = table[(table["method"] == method) & (table["calibration"] == calibration)
                & (table["severity"].astype(str) == str(severity)) & (table["metric"] == metric)]
    assert len(row) == 1
    return float(row["mean"].iloc[0])


def test_report_shift_equals_recomputed(shift_store, store_tools):
    table = _report(shift_store, "shift", store_tools)
    for run in _runs(shift_store):        # one seed: the cell is that run's mean over corruptions
        with np.load(run / "predictions.npz") as p:
            ts = fit_calibrator("ts", p["val_logits"].astype(np.float64), p["val_labels"])
        per_set = {}
        for family in ("gaussian_noise", "pixelate"):
            for s in (1, 3, 5):
                z, y = _saved(run, f"shift:{family}:{s}")
                scores, kind = calibrated_scores(ts, z)
                per_set[(family, s)] = (compute_metrics(y, logits=z), compute_metrics(y, **{kind: scores}))
        for metric in ("acc", "ece", "nll"):
            for s in (1, 3, 5):
                for k, calibration in enumerate(("none", "ts")):
                    want = np.mean([per_set[(f, s)][k][metric] for f in ("gaussian_noise", "pixelate")])
                    assert _cell(table, _label(run), calibration, s, metric) == pytest.approx(want, abs=1e-12)
            want = np.mean([v[0][metric] for v in per_set.values()])
            assert _cell(table, _label(run), "none", "all", metric) == pytest.approx(want, abs=1e-12)


def test_report_one_set_and_ood(shift_store, store_tools):
    one = _report(shift_store, "shift:pixelate:3", store_tools)
    ood = _report(shift_store, "ood", store_tools)
    assert set(one["metric"]) > {"ece", "cece", "nll"} and (one["note"] == "").all()   # full storage
    for run in _runs(shift_store):
        z, y = _saved(run, "shift:pixelate:3")
        want = compute_metrics(y, logits=z)
        for key in ("ece", "cece", "brier"):
            assert _cell(one, _label(run), "none", 3, key) == pytest.approx(want[key], abs=1e-12)
        with np.load(run / "predictions.npz") as p:
            clean = p["test_logits"].astype(np.float64)
            ts = fit_calibrator("ts", p["val_logits"].astype(np.float64), p["val_labels"])
        out = _saved(run, "ood:inverted")[0]
        for calibration, (a, b) in {"none": (clean, out), "ts": (calibrated_scores(ts, clean)[0],
                                                                 calibrated_scores(ts, out)[0])}.items():
            ins, outs = ood_scores(a), ood_scores(b)
            for score in ("msp", "energy", "max_logit", "entropy"):
                want = ood_metrics(ins[score], outs[score], keys=["auroc", "fpr95"])
                row = ood[(ood["method"] == _label(run)) & (ood["calibration"] == calibration)
                          & (ood["score"] == score) & (ood["set"] == "inverted")]
                assert dict(zip(row["metric"], row["mean"])) == pytest.approx(want, abs=1e-12)
    # TS changes the MSP ranking only through the temperature: energy / entropy rows differ from raw
    energy = ood[(ood["score"] == "entropy") & (ood["metric"] == "auroc")]
    assert set(energy["calibration"]) == {"none", "ts"}


def test_report_split_text_and_bad_split(shift_store, store_tools):
    _, run_cli, _ = store_tools
    text = run_cli("report", "--results", shift_store, "--split", "shift")
    assert text.exit_code == 0 and "cECE" in text.output and "ts" in text.output
    bad = run_cli("report", "--results", shift_store, "--split", "train")
    assert bad.exit_code == 2 and "--split train" in bad.output


def test_plot_shift_renders_headless(shift_store, tmp_path, store_tools):
    _, run_cli, _ = store_tools
    result = run_cli("plot", "shift", "--results", shift_store, "--output", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    pngs = list((tmp_path / "figs").glob("shift*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
