"""Start-up and exit of `calbench run`: one pending CPU run trains in the parent, the process ends
without the interpreter's teardown, and every run's torch threads follow one rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calbench.recipe import expand, parse_recipe
from calbench.runner import scheduler
from calbench.runner.store import is_done, read_metrics, run_dir

REPO = Path(__file__).resolve().parents[2]
RECIPE = {"name": "startup", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"],
          "methods": ["ce"], "train": {"epochs": 2}}


def _no_workers(*args, **kwargs):
    raise AssertionError("a worker process was started for a single CPU run")


def test_a_single_cpu_run_trains_in_the_parent_with_the_worker_events(tmp_path, monkeypatch):
    monkeypatch.delenv("CALBENCH_TEST_CRASH_RUN", raising=False)
    monkeypatch.setattr(scheduler._Pool, "start", _no_workers)
    (spec,) = expand(parse_recipe(RECIPE))
    events = []
    result = scheduler.run_matrix([spec], str(tmp_path), scheduler.plan_slots(None, 1), on_event=events.append)
    assert result.status == {spec.run_id: "done"}
    assert is_done(run_dir(tmp_path, "startup", spec.run_id))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("epoch") == 2


def test_a_failing_run_in_the_parent_is_recorded_and_the_parent_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv("CALBENCH_TEST_CRASH_RUN", raising=False)
    monkeypatch.setattr(scheduler._Pool, "start", _no_workers)
    import calbench.engine.train as train

    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(train, "train_run", broken)
    (spec,) = expand(parse_recipe(RECIPE))
    result = scheduler.run_matrix([spec], str(tmp_path), scheduler.plan_slots(None, 1))
    assert result.status[spec.run_id] == "failed"
    assert "broken on purpose" in result.reasons[spec.run_id]
    assert read_metrics(run_dir(tmp_path, "startup", spec.run_id) / "metrics.json")["status"] == "failed"


def test_the_parent_passes_the_slot_threads_to_the_engine(tmp_path, monkeypatch):
    monkeypatch.delenv("CALBENCH_TEST_CRASH_RUN", raising=False)
    import calbench.runner.execute as execute

    seen = {}

    def fake(spec, results_dir, device="cpu", dist=None, progress=None, threads=None):
        seen["threads"] = threads
        return "done", None

    monkeypatch.setattr(execute, "execute_run_reporting", fake)
    monkeypatch.setattr(scheduler, "_cores", lambda: 6)
    monkeypatch.delenv("CALBENCH_THREADS", raising=False)
    (spec,) = expand(parse_recipe(RECIPE))
    scheduler.run_matrix([spec], str(tmp_path), scheduler.plan_slots(None, 2))
    assert seen["threads"] == 3


def test_workers_and_the_engine_follow_one_thread_rule(monkeypatch):
    monkeypatch.setattr(scheduler, "_cores", lambda: 8)
    monkeypatch.delenv("CALBENCH_THREADS", raising=False)
    slots = scheduler.plan_slots(None, 4)
    assert all(s.threads == 2 and s.env["CALBENCH_THREADS"] == "2" for s in slots)
    monkeypatch.setenv("CALBENCH_THREADS", "3")           # the user's word wins
    assert {s.threads for s in scheduler.plan_slots(None, 4)} == {3}
    assert scheduler.plan_slots([0], 1)[0].env["CALBENCH_THREADS"] == "3"


def test_the_cli_process_exits_with_its_code_and_everything_printed(tmp_path):
    """The fast exit (os._exit) flushes first: with stdout a pipe (block-buffered), a lost flush
    would drop the summary; a failing run still exits 1."""
    recipe = tmp_path / "startup.yaml"
    recipe.write_text("name: startup\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\nmethods: [ce]\n"
                      "train: {epochs: 1, lr: 1.0e+30}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    cmd = [sys.executable, "-m", "calbench.cli", "run", str(recipe), "--results", str(tmp_path / "r")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "next: calbench report" in out.stdout
    again = subprocess.run(cmd + ["--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "1 to do" in again.stdout, again.stdout + again.stderr


def test_under_python_the_command_does_not_end_the_process():
    from calbench.commands.run import _is_cli_process, _leave

    assert not _is_cli_process()
    _leave(0)                               # returns
    with pytest.raises(SystemExit) as code:
        _leave(1)
    assert code.value.code == 1
