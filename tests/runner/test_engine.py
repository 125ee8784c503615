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


def _digits_train_labels(spec):
    from calbench.data import create_dataset

    bundle = create_dataset(spec.dataset, root=spec.root, seed=spec.seed, **spec.dataset_options)
    return np.array([int(bundle.train[i][1]) for i in range(len(bundle.train))])


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
    assert set(m["metrics"]["test"]) == {"acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece", "ece-debiased", "ks", "aurc", "e-aurc"}
    assert m["temperature"] > 0 and m["config"]["run_id"] == spec.run_id
    assert set(m["posthoc"]) == {"ts"} and m["posthoc"]["ts"]["params"]["temperature"] == m["temperature"]
    history = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert {"train_loss", "val_acc", "val_ece", "val_nll", "lambda_min", "lambda_mean", "lambda_max"} <= set(history[0])
    preds = np.load(d / "predictions.npz")
    assert preds["test_logits"].shape == (359, 10) and preds["val_labels"].shape == (360,)
    splits = np.load(d / "splits.npz")
    train_labels = np.bincount(_digits_train_labels(spec), minlength=10)
    assert preds["train_class_counts"].sum() == len(splits["train"])
    assert np.array_equal(preds["train_class_counts"], train_labels)
    # digits follows OLTR's thresholds (few < 20, many > 100): saved as numbers beside the counts
    assert preds["train_shot_thresholds"].tolist() == [20.0, 100.0]
    assert not (d / "checkpoint.pt").exists()
    assert (d / "config.json").exists() and (d / "splits.npz").exists()
    # every number traces back to the saved predictions
    from calbench.metrics import compute_metrics
    assert compute_metrics(preds["test_labels"], logits=preds["test_logits"]) == pytest.approx(m["metrics"]["test"], abs=1e-12)
    assert execute_run(spec.to_dict(), str(tmp_path)) == "skipped"


def test_killed_run_resumes_from_its_checkpoint_and_matches(tmp_path, monkeypatch):
    spec = specs(methods=["cals-alm"], epochs=3)[0]
    execute_run(spec.to_dict(), str(tmp_path / "whole"))

    import calbench.engine.checkpoint as checkpoint_module
    import calbench.engine.evaluate as train_module

    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_INTERVAL_S", 0.0)   # a checkpoint every epoch
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
    import calbench.engine.loop as loop_module

    monkeypatch.setattr(loop_module, "check_period", lambda device: period)
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


def _tiny_voc(root, n_train=5, n_test=2, size=(40, 36)):
    """A PASCAL VOC 2012 tree (JPEG images, palette masks with 255 borders, split lists)."""
    from PIL import Image

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_test)):
        names = [f"{split}_{i:04d}" for i in range(n)]
        for name in names:
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
                voc / "JPEGImages" / f"{name}.jpg")
            mask = np.zeros((size[1], size[0]), dtype=np.uint8)
            mask[4:16, 4:20], mask[20:, 22:], mask[2, :] = 1, 2, 255
            png = Image.fromarray(mask, "P")
            png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            png.save(voc / "SegmentationClass" / f"{name}.png")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def _voc_spec(root, epochs=1):
    recipe = parse_recipe({"name": "seg", "seeds": [0], "backbones": ["deeplabv3"], "methods": ["cals-alm"],
                           "datasets": [{"name": "voc2012", "root": str(root),
                                         "options": {"crop_size": 32, "val_fraction": 0.4}}],
                           "train": {"epochs": epochs, "batch_size": 2, "optimizer": "adamw", "lr": 1e-3,
                                     "num_workers": 0, "eval_batch_size": 2}})
    return expand(recipe)[0]


def test_segmentation_run_reports_exact_miou_and_calibration(tmp_path):
    from calbench.metrics import compute_metrics

    spec = _voc_spec(_tiny_voc(tmp_path / "data"))
    assert execute_run(spec.to_dict(), str(tmp_path / "r")) == "done"
    d = run_dir(tmp_path / "r", "seg", spec.run_id)
    m = read_metrics(d / "metrics.json")
    assert set(m["metrics"]["test"]) == {"acc", "ece", "aece", "cece", "mce", "nll", "brier", "smece", "sece", "miou", "ece-debiased", "ks", "aurc", "e-aurc"}
    assert m["metrics"]["test_ts"]["miou"] == m["metrics"]["test"]["miou"]
    preds = np.load(d / "predictions.npz")
    assert not (preds["test_labels"] == 255).any()
    # images are smaller than PIXELS_PER_IMAGE: the saved rows are every non-ignored pixel
    expected = compute_metrics(preds["test_labels"], logits=preds["test_logits"], keys=("miou",))["miou"]
    assert m["metrics"]["test"]["miou"] == pytest.approx(expected, abs=1e-12)


def test_resume_reproduces_python_random_augmentation(tmp_path, monkeypatch):
    """VOC's joint crop/flip draws from python `random` in the main process (num_workers 0)."""
    import calbench.engine.checkpoint as checkpoint_module
    import calbench.engine.evaluate as train_module

    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_INTERVAL_S", 0.0)
    spec = _voc_spec(_tiny_voc(tmp_path / "data"), epochs=2)
    assert execute_run(spec.to_dict(), str(tmp_path / "whole")) == "done"
    real, calls = train_module.predict, {"n": 0}

    def dying_predict(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:          # validation of epoch 1: epoch 0 is checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "predict", dying_predict)
    with pytest.raises(KeyboardInterrupt):
        execute_run(spec.to_dict(), str(tmp_path / "killed"))
    monkeypatch.setattr(train_module, "predict", real)
    assert execute_run(spec.to_dict(), str(tmp_path / "killed")) == "done"
    resumed = read_metrics(run_dir(tmp_path / "killed", "seg", spec.run_id) / "metrics.json")
    whole = read_metrics(run_dir(tmp_path / "whole", "seg", spec.run_id) / "metrics.json")
    assert resumed["metrics"] == whole["metrics"]


def test_a_result_that_cannot_be_written_is_a_failed_run_not_a_dead_worker(tmp_path, monkeypatch):
    import calbench.engine.train as train_module

    real = train_module.RunOutput

    def with_nan(**kwargs):
        kwargs["metrics"]["test"]["ece"] = float("nan")
        return real(**kwargs)

    monkeypatch.setattr(train_module, "RunOutput", with_nan)
    spec = specs(methods=["ce"], epochs=1)[0]
    assert execute_run(spec.to_dict(), str(tmp_path)) == "failed"
    m = read_metrics(run_dir(tmp_path, "t", spec.run_id) / "metrics.json")
    assert m["status"] == "failed" and "JSON" in m["reason"]
