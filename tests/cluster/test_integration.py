"""Issue 7 end to end: submitit's local executor vs local workers; a 2-process gloo CALS-ALM run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from calbench.cli import cli
from calbench.engine.distributed import DistContext, launch

RECIPE = ("name: sub\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\n"
          "methods: [ce, cals-alm]\ntrain: {epochs: 1}\n")


def _metrics(results: Path) -> dict[str, dict]:
    return {f.parent.name: json.loads(f.read_text()) for f in results.glob("sub/*/metrics.json")}


def test_submitit_local_executor_matches_a_local_run_and_resubmits_nothing(tmp_path):
    recipe = tmp_path / "sub.yaml"
    recipe.write_text(RECIPE)
    runner = CliRunner()
    local = runner.invoke(cli, ["run", str(recipe), "--results", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    sub_args = ["run", str(recipe), "--results", str(tmp_path / "sub"), "--launcher", "submitit",
                "--cluster", "local"]
    first = runner.invoke(cli, sub_args)
    assert first.exit_code == 0, first.output
    a, b = _metrics(tmp_path / "local"), _metrics(tmp_path / "sub")
    assert len(a) == 2 and set(a) == set(b)                      # same run ids, same directories
    for run_id in a:
        assert a[run_id]["status"] == b[run_id]["status"] == "done"
        assert (tmp_path / "sub" / "sub" / run_id / "job.json").exists()
        for split, block in a[run_id]["metrics"].items():
            # same training; only the CPU thread count may differ between the two launchers
            assert block == pytest.approx(b[run_id]["metrics"][split], abs=1e-5), (run_id, split)
    stamps = {f: f.stat().st_mtime_ns for f in (tmp_path / "sub").glob("sub/*/*.json")}
    again = runner.invoke(cli, sub_args)
    assert again.exit_code == 0 and "0 to train" in again.output
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "sub").glob("sub/*/*.json")} == stamps


def _cals_rank(out_dir: str, spec_dict: dict, *, dist: DistContext, device: str) -> str:
    """Train a one-epoch cals-alm run as one rank; record the shard and what end_epoch saw/made."""
    from calbench.engine.train import train_run
    from calbench.methods.cals import CalsALM
    from calbench.recipe import RunSpec

    real_set_epoch, real_end_epoch = dist.set_epoch, CalsALM.end_epoch
    record: dict = {}

    def set_epoch(sampler, epoch):
        real_set_epoch(sampler, epoch)
        record["shard"] = list(iter(sampler))

    def end_epoch(self, val_logits, val_targets, epoch):
        record["before"] = {k: v.clone() for k, v in self.state_dict().items()}
        record["val_logits"], record["val_targets"] = val_logits.cpu(), val_targets.cpu()
        real_end_epoch(self, val_logits, val_targets, epoch)
        record["multipliers"] = self.multipliers.clone()
        record["penalties"] = self.penalties.clone()

    dist.set_epoch = set_epoch
    CalsALM.end_epoch = end_epoch
    spec = RunSpec.from_dict(spec_dict)
    train_run(spec, Path(out_dir) / f"rank{dist.rank}", device=device, dist=dist)
    torch.save(record, Path(out_dir) / f"rank{dist.rank}.pt")
    return "ok"


def test_two_gloo_processes_shard_train_and_share_cals_multipliers(tmp_path):
    from calbench.data import create_dataset
    from calbench.methods import create_method
    from calbench.recipe import expand, parse_recipe

    spec = expand(parse_recipe({"name": "ddp", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"],
                                "methods": [{"cals-alm": {"margin": 2.0}}],
                                "train": {"epochs": 1, "batch_size": 64, "world_size": 2}}))[0]
    bundle = create_dataset("digits", seed=0)
    train_size = len(bundle.train)
    assert launch(_cals_rank, 2, str(tmp_path), spec.to_dict()) == "ok"
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # disjoint shards of the train split that together cover it
    assert set(r0["shard"]).isdisjoint(r1["shard"])
    assert sorted(r0["shard"] + r1["shard"]) == list(range(train_size))
    # every rank saw all validation rows and computed the same multipliers
    assert r0["val_logits"].shape[0] == r1["val_logits"].shape[0] == len(bundle.val)
    assert torch.equal(r0["val_logits"], r1["val_logits"])
    assert torch.equal(r0["multipliers"], r1["multipliers"]) and torch.equal(r0["penalties"], r1["penalties"])
    # ... equal to the update computed in one process from all validation logits
    single = create_method("cals-alm", 10, margin=2.0)
    single.load_state_dict(r0["before"])
    single.end_epoch(r0["val_logits"], r0["val_targets"], 0)
    assert torch.equal(single.multipliers, r0["multipliers"])
    assert float(single.multipliers.max()) > 1e-6          # the update did something

