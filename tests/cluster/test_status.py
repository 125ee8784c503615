"""`calbench status` on a hand-built results store (results_schema.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from calbench.cli import cli
from calbench.commands.status import collect_status
from calbench.runner.store import PREDICTION_KEYS


def _metrics(run_dir: Path, status: str, reason: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"schema": 1, "run_id": run_dir.name, "status": status, "reason": reason}))
    if status == "done":
        np.savez(run_dir / "predictions.npz", **{k: np.zeros(2) for k in PREDICTION_KEYS})


def _store(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    quick = results / "quickstart"
    ids = [f"{i:012x}" for i in range(9)]
    quick.mkdir(parents=True)
    (quick / "recipe.json").write_text(json.dumps({"name": "quickstart", "run_ids": ids}))
    for rid in ids[:3]:
        _metrics(quick / rid, "done")
    _metrics(quick / ids[3], "failed", "loss became nan at epoch 3")
    (quick / ids[4]).mkdir()
    (quick / ids[4] / "checkpoint.pt").write_bytes(b"x")          # local run in progress
    sub = quick / ".submitit"
    sub.mkdir()
    for rid, job_id, files in ((ids[5], "41_0", ()), (ids[6], "41_1", ("41_1_0_log.out",)),
                               (ids[7], "41_2", ("41_2_0_log.out", "41_2_0_result.pkl"))):
        (quick / rid).mkdir()
        (quick / rid / "job.json").write_text(json.dumps({"job_id": job_id, "folder": ".submitit"}))
        for name in files:
            (sub / name).write_bytes(b"")
    # ids[8]: pending (nothing on disk). A second recipe without recipe.json: counted from dirs.
    _metrics(results / "other" / "aaaaaaaaaaaa", "done")
    _metrics(results / "other" / "bbbbbbbbbbbb", "failed", "boom")
    return results


def test_collect_status_counts(tmp_path):
    by_name = {rs.recipe: rs for rs in collect_status(_store(tmp_path))}
    quick = by_name["quickstart"]
    assert {s: quick.count(s) for s in ("done", "running", "queued", "failed", "pending")} == \
        {"done": 3, "running": 2, "queued": 1, "failed": 2, "pending": 1}
    other = by_name["other"]
    assert (other.count("done"), other.count("failed"), other.count("pending")) == (1, 1, 0)


def test_status_command_prints_counts(tmp_path):
    results = _store(tmp_path)
    out = CliRunner().invoke(cli, ["status", "--results", str(results), "--failed"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[1:] for line in
            (re.sub(r"[│┃|]", " ", ln) for ln in out.output.splitlines()) if line.split()}
    #                      runs done running queued failed pending
    assert rows["quickstart"] == ["9", "3", "2", "1", "2", "1"]
    assert rows["other"] == ["2", "1", "0", "0", "1", "0"]
    assert "loss became nan at epoch 3" in out.output


def test_status_missing_directory_is_one_line_error(tmp_path):
    out = CliRunner().invoke(cli, ["status", "--results", str(tmp_path / "nope")])
    assert out.exit_code == 2
    assert "calbench: error:" in out.output


def _rows(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in
            (re.sub(r"[│┃|]", " ", ln) for ln in output.splitlines()) if line.split()}


def test_bad_store_files_get_one_line_each_and_the_rest_is_counted(tmp_path):
    results = _store(tmp_path)
    quick = results / "quickstart"
    ids = sorted(p.name for p in quick.iterdir() if p.is_dir() and not p.name.startswith("."))
    (quick / ids[0] / "metrics.json").write_text("[]")                        # not an object
    (quick / ids[1] / "metrics.json").write_text('{"status": 7, "run_id": 5}')  # values of the wrong kind
    npz = quick / ids[2] / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[:40])                                    # truncated
    (results / "other" / "recipe.json").write_text("[]")
    out = CliRunner().invoke(cli, ["status", "--results", str(results)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    #                      runs done running queued failed pending: the three damaged runs are failed
    assert _rows(out.output)["quickstart"] == ["9", "0", "2", "1", "5", "1"]
    assert _rows(out.output)["other"] == ["2", "1", "0", "0", "1", "0"]      # counted from its run dirs
    warnings = [ln for ln in out.output.splitlines() if ln.startswith("calbench: warning:")]
    named = {name: [w for w in warnings if name in w] for name in
             (f"{ids[0]}/metrics.json", f"{ids[2]}/predictions.npz", "other/recipe.json")}
    assert all(len(found) == 1 for found in named.values()), warnings
