"""submitit launcher pieces that need no engine: option checks and the skip-if-done filter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calbench.errors import ConfigError
from calbench.runner.store import PREDICTION_KEYS
from calbench.runner.submitit_launcher import SubmititOptions, make_executor, runs_to_submit


def test_options_are_validated():
    with pytest.raises(ConfigError, match="--cluster"):
        SubmititOptions(cluster="pbs").validate()
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        SubmititOptions(gpus_per_run=0).validate()
    assert SubmititOptions(cluster="local").validate().cluster == "local"


def test_done_and_live_jobs_are_not_submitted_again(tmp_path):
    recipe = tmp_path / "r"
    specs = [{"run_id": f"{i:012x}"} for i in range(4)]
    (recipe / specs[0]["run_id"]).mkdir(parents=True)
    (recipe / specs[0]["run_id"] / "metrics.json").write_text(json.dumps({"status": "done"}))
    np.savez(recipe / specs[0]["run_id"] / "predictions.npz", **{k: np.zeros(1) for k in PREDICTION_KEYS})
    (recipe / specs[1]["run_id"]).mkdir()
    (recipe / specs[1]["run_id"] / "job.json").write_text(json.dumps({"job_id": "7", "folder": ".submitit"}))
    (recipe / specs[2]["run_id"]).mkdir()
    (recipe / specs[2]["run_id"] / "metrics.json").write_text(json.dumps({"status": "failed"}))
    todo = [s["run_id"] for s in runs_to_submit(specs, tmp_path, "r")]
    assert todo == [specs[2]["run_id"], specs[3]["run_id"]]  # failed runs are retried


def test_local_executor_parameters(tmp_path):
    ex = make_executor(tmp_path / ".submitit", SubmititOptions(cluster="local", time_min=7), "cpu")
    assert type(ex._executor).__name__ == "LocalExecutor"
    assert ex._executor.parameters["timeout_min"] == 7
    assert ex._executor.parameters["tasks_per_node"] == 1
