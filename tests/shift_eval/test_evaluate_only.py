"""Adding evaluation sets to a finished recipe evaluates only: nothing trains, the training record
is byte-identical, each set is its own file, the run ids do not change."""

from __future__ import annotations

import json

import numpy as np

from calbench.engine.shift_eval import WEIGHTS_NAME
from calbench.metrics import compute_metrics
from calbench.runner.evaluate_sets import EVAL_DIR

TRAINING_FILES = ("history.jsonl", "metrics.json", "predictions.npz", "splits.npz", WEIGHTS_NAME)


def _runs(results):
    return sorted(p for p in (results / "tiny").iterdir() if p.is_dir())


def test_adding_sets_trains_nothing_and_keeps_the_training_record(plain_store, shift_store):
    before, after = _runs(plain_store), _runs(shift_store)
    assert [p.name for p in before] == [p.name for p in after] and len(before) == 2   # same run ids
    for old, new in zip(before, after):
        for name in TRAINING_FILES:
            assert (old / name).read_bytes() == (new / name).read_bytes(), name
        assert not (old / EVAL_DIR).exists()
        ids = sorted(p.stem for p in (new / EVAL_DIR).glob("*.npz"))
        assert ids == sorted(["ood:gaussian", "ood:inverted"] + [f"shift:{f}:{s}" for f in ("gaussian_noise", "pixelate")
                                                                  for s in (1, 3, 5)])


def test_a_second_run_is_a_no_op(shift_store, tmp_path, store_tools):
    SHIFT, run_cli, write_recipe = store_tools
    stamps = {p: p.stat().st_mtime_ns for r in _runs(shift_store) for p in (r / EVAL_DIR).iterdir()}
    result = run_cli("run", write_recipe(tmp_path / "tiny.yaml", SHIFT), "--results", shift_store)
    assert result.exit_code == 0, result.output
    assert "2 already done, 0 to train" in result.output
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_stored_metrics_match_the_saved_logits(shift_store):
    for run in _runs(shift_store):
        record = json.loads((run / EVAL_DIR / "shift:gaussian_noise:5.json").read_text())
        with np.load(run / EVAL_DIR / "shift:gaussian_noise:5.npz") as data:
            logits, labels = data["logits"], data["labels"]
        assert logits.dtype == np.float16 and record["n"] == len(labels) > 0
        ece = compute_metrics(labels, logits=logits.astype(np.float64), keys=("ece",))["ece"]
        assert abs(ece - record["metrics"]["test"]["ece"]) < 5e-3     # float32 vs saved float16 logits
        assert "test_ts" in record["metrics"]
        ood = json.loads((run / EVAL_DIR / "ood:gaussian.json").read_text())["metrics"]
        assert set(ood) == {"none", "ts"} and record["storage"] == "full"
        assert set(ood["none"]) == {"msp", "max_logit", "energy", "entropy"} == set(ood["ts"])
        assert 0 <= ood["none"]["msp"]["auroc"] <= 1


def test_severity_hurts_on_average(shift_store):
    accs = []
    for s in (1, 5):
        accs.append(np.mean([json.loads((r / EVAL_DIR / f"shift:gaussian_noise:{s}.json").read_text())
                             ["metrics"]["test"]["acc"] for r in _runs(shift_store)]))
    assert accs[1] < accs[0]


def test_unknown_eval_set_is_one_line(tmp_path, store_tools):
    _, run_cli, write_recipe = store_tools
    result = run_cli("run", write_recipe(tmp_path / "t.yaml", {"shift": ["gausian_noise"]}), "--dry-run")
    assert result.exit_code == 2 and "unknown shift set 'gausian_noise'" in result.output
    assert "Traceback" not in result.output


def test_without_kept_weights_evaluation_fails_in_one_line(tmp_path, store_tools):
    import yaml

    SHIFT, run_cli, write_recipe = store_tools
    path = write_recipe(tmp_path / "tiny.yaml", None)
    recipe = yaml.safe_load(path.read_text())
    recipe.update(keep_weights=False, methods=["ce"])
    path.write_text(yaml.safe_dump(recipe))
    results = tmp_path / "results"
    assert run_cli("run", path, "--results", results).exit_code == 0
    (run,) = _runs(results)
    assert not (run / WEIGHTS_NAME).exists()
    record = (run / "metrics.json").read_bytes()
    recipe["datasets"][0]["evaluate"] = {"ood": ["uniform"]}
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("run", path, "--results", results)
    assert result.exit_code == 1 and "no saved weights" in result.output and "Traceback" not in result.output
    assert (run / "metrics.json").read_bytes() == record


def test_an_evaluation_only_rerun_says_evaluated(plain_store, tmp_path, store_tools):
    import shutil

    _, run_cli, write_recipe = store_tools
    results = tmp_path / "results"
    shutil.copytree(plain_store, results)
    result = run_cli("run", write_recipe(tmp_path / "tiny.yaml", {"ood": ["uniform"]}), "--results", results)
    assert result.exit_code == 0, result.output
    assert "0 to train, 2 to evaluate" in result.output and "2 runs evaluated in" in result.output
    assert "trained" not in result.output
