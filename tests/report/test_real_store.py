"""End to end on a store written by the real `calbench run` (a two-run slice of the quickstart): every
point `report` recomputes from predictions.npz equals the run's metrics.json, raw and after TS refitted
at report time on the saved validation predictions; a calibrator the recipe never asked for applies too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from calbench.cli import cli
from calbench.report import compute_cells, load_results
from calbench.report.tidy import calibrated_predictions

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"


def test_report_on_a_real_run_store(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "calbench.cli", "run", str(QUICKSTART), "--results", str(results), "--jobs", "1",
           "--set", "train.epochs=1", "--set", "seeds=[0]", "--only", "ce"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = load_results(results)
    assert len(loaded.done) == 2 and len(loaded.missing) == 20  # ce on digits and digits-lt; the rest pending
    keys = ("acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece")
    for posthoc, split in ((None, "test"), ("ts", "test_ts")):
        cells = compute_cells(loaded, keys=keys, B=0, posthoc=posthoc)
        assert len(cells) == 2
        for (label, group), cell in cells.items():
            (run,) = [r for r in loaded.done if r.group == group]
            (point,) = cell.estimate.per_run
            for k in keys:  # TS is refitted from predictions.npz: the same float64 fit as the engine's
                assert abs(point[k] - run.metrics[split][k]) <= 1e-12, (split, k)
    for run in loaded.done:
        assert [p.name.split("-")[0] for p in (run.run_dir / "posthoc").glob("*.json")] == ["ts"]
        labels, logits, kind = calibrated_predictions(run, "vs")  # the recipe trained with posthoc: [ts]
        assert kind == "logits" and logits.shape[0] == labels.shape[0]
    res = CliRunner().invoke(cli, ["report", "--results", str(results), "--bootstrap", "0", "--markdown",
                                   "--posthoc", "ts,vs"])
    assert res.exit_code == 0, res.output
    assert "recomputed" not in res.stderr, res.stderr
    assert res.stdout.count(" + ts |") == 11 and res.stdout.count(" + vs |") == 11  # every method row, per block
    for fmt in ([], ["--latex"], ["--markdown"], ["--csv"]):
        res = CliRunner().invoke(cli, ["report", "--results", str(results), "--bootstrap", "100", *fmt])
        assert res.exit_code == 0, res.output
        assert "recomputed" not in res.stderr and "unreadable" not in res.stderr
    res = CliRunner().invoke(cli, ["report", "--results", str(results), "--bootstrap", "0", "--markdown"])
    assert "missing: ls(alpha=0.05) on digits / mlp: seed 0 not run" in res.stdout
