"""The engine: deterministic on the CPU, resumes a killed run exactly, records non-finite losses."""

import json

import numpy as np
import pytest

from calbench.recipe import expand, parse_recipe
from calbench.runner.execute import execute_run
from calbench.runner.store import is_done, read_metrics, run_dir


def specs(methods=("ce",), epochs=2, seeds=(0,), **train):
    recipe = parse_recipe({"name": "t", "seeds": list(seeds), "datasets": ["digits"], "backbones": ["mlp"],
                           "methods": list(methods), "train": {"epochs": epochs, "batch_size": 128, **train}})
    return expand(recipe)


def test_same_recipe_and_seed_give_identical_metrics(tmp_path):
    spec = specs(methods=["cals-alm"])[0]
    assert execute_run(spec.to_dict(), str(tmp_path / "a")) == "done"
    assert execute_run(spec.to_dict(), str(tmp_path / "b")) == "done"
    a = read_metrics(run_dir(tmp_path / "a", "t", spec.run_id) / "metrics.json")
    b = read_metrics(run_dir(tmp_path / "b", "t", spec.run_id) / "metrics.json")
    assert a["metrics"] == b["metrics"] and a["temperature"] == b["temperature"]
    pa = np.load(run_dir(tmp_path / "a", "t", spec.run_id) / "predictions.npz")
    pb = np.load(run_dir(tmp_path / "b", "t", spec.run_id) / "predictions.npz")
    assert np.array_equal(pa["test_logits"], pb["test_logits"])


def test_run_directory_contents(tmp_path):
    spec = specs(methods=["cals-alm"])[0]
    execute_run(spec.to_dict(), str(tmp_path))
    d = run_dir(tmp_path, "t", spec.run_id)
    m = read_metrics(d / "metrics.json")
    assert m["status"] == "done" and m["run_id"] == spec.run_id and m["epochs_done"] == 2
    assert set(m["metrics"]) == {"test", "test_ts", "val"}
    assert set(m["metrics"]["test"]) == {"acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece"}
    assert m["temperature"] > 0 and m["config"]["run_id"] == spec.run_id
    history = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert {"train_loss", "val_acc", "val_ece", "val_nll", "lambda_min", "lambda_mean", "lambda_max"} <= set(history[0])
    preds = np.load(d / "predictions.npz")
    assert preds["test_logits"].shape == (359, 10) and preds["val_labels"].shape == (360,)
    assert not (d / "checkpoint.pt").exists()
    assert (d / "config.json").exists() and (d / "splits.npz").exists()
    # every number traces back to the saved predictions
    from calbench.metrics import compute_metrics
    assert compute_metrics(preds["test_labels"], logits=preds["test_logits"]) == pytest.approx(m["metrics"]["test"], abs=1e-12)
    assert execute_run(spec.to_dict(), str(tmp_path)) == "skipped"


def test_killed_run_resumes_from_its_checkpoint_and_matches(tmp_path, monkeypatch):
    spec = specs(methods=["cals-alm"], epochs=3)[0]
    execute_run(spec.to_dict(), str(tmp_path / "whole"))

    import calbench.engine.train as train_module

    real = train_module.predict
    calls = {"n": 0}

    def dying_predict(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:          # validation of epoch 2: epochs 0 and 1 are checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "predict", dying_predict)
    with pytest.raises(KeyboardInterrupt):
        execute_run(spec.to_dict(), str(tmp_path / "killed"))
    d = run_dir(tmp_path / "killed", "t", spec.run_id)
    assert (d / "checkpoint.pt").exists() and not is_done(d)
    monkeypatch.setattr(train_module, "predict", real)
    assert execute_run(spec.to_dict(), str(tmp_path / "killed")) == "done"
    resumed = read_metrics(d / "metrics.json")
    whole = read_metrics(run_dir(tmp_path / "whole", "t", spec.run_id) / "metrics.json")
    assert resumed["metrics"] == whole["metrics"]
    assert len((d / "history.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("period", [1, 1000])   # 1000: the accelerator path (checked at epoch end)
def test_non_finite_loss_is_recorded_as_failed_with_epoch(tmp_path, monkeypatch, period):
    import calbench.engine.train as train_module

    monkeypatch.setattr(train_module, "_check_period", lambda device: period)
    import torch

    from calbench.methods.cross_entropy import CrossEntropy

    real = CrossEntropy.loss
    state = {"calls": 0}

    def poisoned(self, logits, targets, features=None):
        state["calls"] += 1
        loss = real(self, logits, targets)
        return loss * torch.tensor(float("nan")) if state["calls"] > 9 else loss

    monkeypatch.setattr(CrossEntropy, "loss", poisoned)
    spec = specs(methods=["ce"], epochs=3)[0]
    assert execute_run(spec.to_dict(), str(tmp_path)) == "failed"
    m = read_metrics(run_dir(tmp_path, "t", spec.run_id) / "metrics.json")
    assert m["status"] == "failed" and m["failed_epoch"] == 1 and "nan" in m["reason"]
