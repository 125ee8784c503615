"""A results folder may come from someone else: a planted checkpoint never runs code, and a
checkpoint of another run, a torn one or a foreign file is never trusted."""

import pickle

import numpy as np
import torch

from calbench.engine import checkpoint as checkpoint_module
from calbench.engine.checkpoint import load_checkpoint, save_checkpoint
from calbench.engine.train import train_run
from calbench.recipe import expand, parse_recipe


def _spec(epochs=2):
    recipe = parse_recipe({"name": "safe", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"],
                           "methods": ["ce"], "posthoc": [], "train": {"epochs": epochs, "batch_size": 128}})
    return expand(recipe)[0]


class Payload:
    """Unpickling this writes the marker file: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker, run_id):
    """A checkpoint.pt that torch.load(weights_only=False) would execute (it names the right run)."""
    torch.save({"run_id": run_id, "epoch": 0, "payload": Payload(marker)}, path)


def test_a_planted_pickle_payload_does_not_run_and_the_run_trains_from_scratch(tmp_path, capfd):
    spec = _spec()
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _plant(run_dir / "checkpoint.pt", marker, spec.run_id)
    with open(run_dir / "checkpoint.pt", "rb") as fh:     # the payload is real: a plain unpickle runs it
        torch.load(fh, weights_only=False)
    assert marker.exists()
    marker.unlink()
    capfd.readouterr()
    planted = train_run(spec, run_dir)
    assert not marker.exists()
    warning = [line for line in capfd.readouterr().err.splitlines() if line]
    assert len(warning) == 1 and "checkpoint.pt" in warning[0] and "from scratch" in warning[0]
    fresh = train_run(spec, tmp_path / "fresh")
    assert planted.metrics == fresh.metrics
    assert np.array_equal(planted.predictions["test_logits"], fresh.predictions["test_logits"])


def test_a_checkpoint_of_another_run_or_a_torn_file_is_ignored_with_one_line(tmp_path, capfd):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"run_id": "other", "epoch": 3, "model": {"w": torch.ones(2)}})
    assert load_checkpoint(path, "other")["epoch"] == 3
    assert load_checkpoint(path, "mine") is None
    path.write_bytes(pickle.dumps({"run_id": "mine"})[:7])
    assert load_checkpoint(path, "mine") is None
    lines = [line for line in capfd.readouterr().err.splitlines() if line]
    assert len(lines) == 2 and all(line.startswith("calbench: warning: ") for line in lines)


def test_checkpoints_take_the_umask_mode_and_are_written_only_when_due(tmp_path, monkeypatch):
    import os

    old = os.umask(0o002)
    try:
        save_checkpoint(tmp_path / "c.pt", {"run_id": "x"})
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o664
    saves = []
    real = checkpoint_module.save_checkpoint
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", lambda p, s: saves.append(s["epoch"]) or real(p, s))
    train_run(_spec(epochs=3), tmp_path / "quick")           # seconds-long: no checkpoint is worth it
    assert saves == []
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_INTERVAL_S", 0.0)
    train_run(_spec(epochs=3), tmp_path / "slow")
    assert saves == [0, 1, 2]
