"""Every registered method resumes exactly: a run interrupted after epoch 1 and resumed from its
checkpoint equals the uninterrupted run (metrics, history, saved predictions). Batch methods draw
their mixing from the engine's per-(seed, epoch) generator, stateful methods (multipliers, gammas,
a gamma-net's Adam moments) keep everything in state_dict, and checkpoints load weights_only."""

import numpy as np
import pytest

from calbench.engine import checkpoint as checkpoint_module
from calbench.engine.build import build_run
from calbench.engine.train import train_run
from calbench.methods import METHODS
from calbench.recipe import expand, parse_recipe


class Interrupted(Exception):
    pass


def _spec(method: str, epochs: int = 3):
    recipe = parse_recipe({"name": "resume", "seeds": [0], "datasets": ["digits-lt"], "backbones": ["mlp"],
                           "methods": [method], "posthoc": [],
                           "train": {"epochs": epochs, "batch_size": 128, "eval_batch_size": 512}})
    return expand(recipe)[0]


def _stop_after_epoch_1(history):
    if len(history) == 2:
        raise Interrupted


def _comparable(out):
    history = [{k: v for k, v in line.items() if k != "time_s"} for line in out.history]
    return out.metrics, history, out.predictions


@pytest.mark.parametrize("method", METHODS.names())
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(method, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_INTERVAL_S", 0.0)   # a checkpoint every epoch
    spec = _spec(method)
    whole = train_run(spec, tmp_path / "whole")
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "killed", on_epoch=_stop_after_epoch_1)
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    resumed = train_run(spec, tmp_path / "killed")
    assert [line["epoch"] for line in resumed.history] == [0, 1, 2]
    (wm, wh, wp), (rm, rh, rp) = _comparable(whole), _comparable(resumed)
    assert rm == wm and rh == wh
    assert set(rp) == set(wp) and all(np.array_equal(rp[k], wp[k]) for k in wp)


@pytest.mark.parametrize("method", [n for n in METHODS.names() if getattr(METHODS.get(n), "needs_class_counts", False)])
def test_methods_that_need_class_counts_get_the_trained_rows_counts(method):
    import torch

    spec = _spec(method)
    parts = build_run(spec, torch.device("cpu"), None)
    labels = parts.train_set.tensors[1][parts.train_idx]
    expected = torch.bincount(labels, minlength=parts.bundle.num_classes)
    assert torch.equal(parts.train_class_counts, expected)
    assert torch.equal(parts.method.class_counts, expected.double())
    assert len(set(expected.tolist())) > 1           # digits-lt: a long tail, not a flat prior


def test_batch_methods_transform_each_batch_with_the_epoch_generator_and_get_its_ctx(monkeypatch, tmp_path):
    cls = METHODS.get("mixup")
    seen = {"generators": set(), "ctx_ok": 0, "steps": 0}
    real_transform, real_loss = cls.transform_batch, cls.loss

    def transform(self, x, y, generator=None):
        seen["generators"].add(generator.initial_seed())
        x, y, ctx = real_transform(self, x, y, generator)
        seen["last_ctx"] = ctx
        return x, y, ctx

    def loss(self, logits, targets, features=None, ctx=None):
        seen["steps"] += 1
        seen["ctx_ok"] += ctx is seen["last_ctx"] and ctx is not None
        return real_loss(self, logits, targets, features=features, ctx=ctx)

    monkeypatch.setattr(cls, "transform_batch", transform)
    monkeypatch.setattr(cls, "loss", loss)
    train_run(_spec("mixup", epochs=2), tmp_path)
    assert seen["steps"] > 0 and seen["ctx_ok"] == seen["steps"]
    assert len(seen["generators"]) == 2            # one seeded mixing stream per epoch
