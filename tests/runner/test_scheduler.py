"""The local scheduler: every run exactly once over two workers; a crashing worker loses nothing else."""

import json

from click.testing import CliRunner

from calbench.cli import cli
from calbench.recipe import expand, parse_recipe
from calbench.runner.scheduler import plan_slots, run_matrix
from calbench.runner.store import is_done, read_metrics, run_dir


def matrix(methods, seeds=(0, 1)):
    return expand(parse_recipe({"name": "s", "seeds": list(seeds), "datasets": ["digits"],
                                "backbones": ["mlp"], "methods": list(methods),
                                "train": {"epochs": 1, "batch_size": 256}}))


def test_runs_complete_exactly_once_and_a_crash_loses_nothing(tmp_path, monkeypatch):
    specs = matrix(["ce", "ls", "mbls"])
    victim = specs[2].run_id
    monkeypatch.setenv("CALBENCH_TEST_CRASH_RUN", victim)
    events = []
    result = run_matrix(specs, str(tmp_path), plan_slots(None, 2), on_event=events.append)
    assert set(result.status) == {s.run_id for s in specs}
    finished = [e["run_id"] for e in events if e["kind"] == "finished"]
    assert sorted(finished) == sorted(s.run_id for s in specs)          # each exactly once
    assert result.status[victim] == "failed"
    failed = read_metrics(run_dir(tmp_path, "s", victim) / "metrics.json")
    assert "worker process died" in failed["reason"]
    for s in specs:
        if s.run_id != victim:
            assert result.status[s.run_id] == "done" and is_done(run_dir(tmp_path, "s", s.run_id))


def test_cli_end_to_end_and_rerun_recomputes_nothing(tmp_path):
    recipe = tmp_path / "two.yaml"
    recipe.write_text("name: e2e\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\n"
                      "methods: [ce, cals-alm]\ntrain: {epochs: 1}\nposthoc: [ts]\n")
    results = tmp_path / "results"
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(recipe), "--results", str(results), "--jobs", "1"])
    assert first.exit_code == 0, first.output
    files = sorted(results.glob("e2e/*/metrics.json"))
    assert len(files) == 2
    assert {json.loads(f.read_text())["status"] for f in files} == {"done"}
    stamps = [f.stat().st_mtime_ns for f in files]
    recipe_json = json.loads((results / "e2e" / "recipe.json").read_text())
    assert recipe_json["methods"] == ["ce", "cals-alm"] and len(recipe_json["runs"]) == 2
    second = runner.invoke(cli, ["run", str(recipe), "--results", str(results)])
    assert second.exit_code == 0 and "0 to train" in second.output
    assert [f.stat().st_mtime_ns for f in files] == stamps
    dry = runner.invoke(cli, ["run", str(recipe), "--results", str(results), "--dry-run"])
    assert "2 done" in dry.output


def test_workers_can_run_dataloader_worker_processes(tmp_path):
    """On-disk datasets load through DataLoader workers: a scheduler worker must be allowed children."""
    import pickle

    import numpy as np

    d = tmp_path / "data" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{b}", 8) for b in range(1, 6)] + [("test_batch", 10)]:
        pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                     b"labels": [int(v) for v in rng.integers(0, 10, n)]}, open(d / name, "wb"))
    pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, open(d / "batches.meta", "wb"))
    specs = expand(parse_recipe({"name": "disk", "seeds": [0], "backbones": ["mlp"], "methods": ["ce"],
                                 "datasets": [{"name": "cifar10", "root": str(tmp_path / "data"),
                                               "options": {"val_size": 10}}],
                                 "train": {"epochs": 1, "batch_size": 8, "num_workers": 2}}))
    result = run_matrix(specs, str(tmp_path / "r"), plan_slots(None, 1))
    m = read_metrics(run_dir(tmp_path / "r", "disk", specs[0].run_id) / "metrics.json")
    assert result.status[specs[0].run_id] == "done", m["reason"]


def test_cli_exits_1_when_a_run_fails_and_a_rerun_retrains_only_that_run(tmp_path, monkeypatch):
    from calbench.recipe import load_recipe

    recipe = tmp_path / "fail.yaml"
    recipe.write_text("name: fail\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\n"
                      "methods: [ce, ls]\ntrain: {epochs: 1}\n")
    ce, ls = expand(load_recipe(recipe))
    results = tmp_path / "results"
    monkeypatch.setenv("CALBENCH_TEST_CRASH_RUN", ls.run_id)
    first = CliRunner().invoke(cli, ["run", str(recipe), "--results", str(results), "--jobs", "1"])
    assert first.exit_code == 1, first.output
    assert "failed" in first.output
    assert read_metrics(run_dir(results, "fail", ls.run_id) / "metrics.json")["status"] == "failed"
    done_stamp = (run_dir(results, "fail", ce.run_id) / "metrics.json").stat().st_mtime_ns
    monkeypatch.delenv("CALBENCH_TEST_CRASH_RUN")
    second = CliRunner().invoke(cli, ["run", str(recipe), "--results", str(results), "--jobs", "1"])
    assert second.exit_code == 0 and "1 already done, 1 to train" in second.output
    assert is_done(run_dir(results, "fail", ls.run_id))
    assert (run_dir(results, "fail", ce.run_id) / "metrics.json").stat().st_mtime_ns == done_stamp
