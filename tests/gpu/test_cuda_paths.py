"""calbench's CUDA paths, run on a CUDA device (pytest -m cuda; skipped with the reason elsewhere):
every registered method and every registered dataset trains there, bfloat16 autocast and
channels_last are in effect, the device-resident loader gives the DataLoader path's batches bit
for bit on the GPU, and `calbench run --gpus 0 --jobs 2` runs two workers over one GPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from . import CUDA_ONLY
from data.conftest import FIXTURES, make_cifar, make_tiny_imagenet

from calbench.data import DATASETS, create_dataset
from calbench.data import device_resident as resident
from calbench.engine.batches import Split, make_splits
from calbench.engine.build import build_run
from calbench.engine.train import train_run
from calbench.methods import METHODS
from calbench.recipe import expand, parse_recipe

pytestmark = CUDA_ONLY
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Decoded-image caches of the fixtures go to the test's folder, not ~/.cache/calbench."""
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path / "cache"))


def _spec(method="ce", dataset="digits", root=None, options=None, backbone="mlp", **train):
    raw = {"name": "cuda", "seeds": [0], "methods": [method], "backbones": [backbone], "posthoc": ["ts"],
           "datasets": [{"name": dataset, **({"root": str(root)} if root else {}), "options": options or {}}],
           "train": {"epochs": 3, "batch_size": 64, "num_workers": 0, **train}}
    return expand(parse_recipe(raw))[0]


def _finite_blocks(metrics: dict) -> None:
    for block, values in metrics.items():
        for key, value in values.items():
            if isinstance(value, float):
                assert math.isfinite(value), f"{block}.{key} = {value}"


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_on_cuda(method, tmp_path):
    """Digits, the MLP, 3 epochs under bf16 autocast: the loss code's GPU path (the C kernels are
    CPU-only) trains every method to far above chance, with finite metrics and post-hoc TS."""
    out = train_run(_spec(method), tmp_path, device="cuda")
    assert out.epochs_done == 3
    _finite_blocks(out.metrics)
    assert out.metrics["test"]["acc"] > 0.3, f"{method} on cuda: test accuracy {out.metrics['test']['acc']}"
    assert "test_ts" in out.metrics


def _backbone_for(name: str) -> str:
    task = DATASETS.entry(name).meta["task"]
    return {"segmentation": "deeplabv3", "text": "gpool-cnn"}.get(task, "small-cnn")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_trains_on_cuda(name, tmp_path):
    """One epoch of ce on each registered dataset's on-disk fixture (tests/data/conftest.py)."""
    fixture = FIXTURES[name]
    root = fixture.make(tmp_path)
    text = DATASETS.entry(name).meta["task"] == "text"
    options = {**fixture.options, "max_len": 64} if text else fixture.options   # gpool-cnn's widest kernel
    out = train_run(_spec("ce", name, root, options, _backbone_for(name), epochs=1, batch_size=4),
                    tmp_path / "run", device="cuda")
    assert out.epochs_done == 1
    _finite_blocks(out.metrics)


def _parts(tmp_path, **train):
    root = make_cifar(tmp_path / "cifar", "cifar10")
    spec = _spec("ce", "cifar10", root, {"val_size": 8}, "small-cnn", batch_size=8, **train)
    return build_run(spec, torch.device("cuda"), None)


def test_bf16_autocast_and_channels_last_are_in_effect(tmp_path):
    from calbench.engine import loop

    parts = _parts(tmp_path)
    conv = next(m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = next(iter(parts.train_set.batches(torch.arange(8), 8)))
    x = x.to("cuda")
    assert x.is_contiguous(memory_format=torch.channels_last)
    logits, _ = loop._forward(parts, x)
    assert logits.dtype == torch.bfloat16
    plain = _parts(tmp_path / "plain", amp=False, channels_last=False)
    x, _ = next(iter(plain.train_set.batches(torch.arange(8), 8)))
    assert x.is_contiguous() and loop._forward(plain, x.to("cuda"))[0].dtype == torch.float32


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_resident_loader_equals_the_dataloader_on_cuda(tmp_path, num_workers):
    """Tiny-ImageNet JPEGs: batches cut on the GPU equal the DataLoader's (CPU workers) bit for bit."""
    root = make_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    bundle = create_dataset("tiny-imagenet", root, seed=0, val_per_class=2)
    cuda = torch.device("cuda")
    for ds in (bundle.train, bundle.test):
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(2))
        torch.manual_seed(9)
        loader = [(x.cpu(), y.cpu()) for x, y in Split(ds, num_workers, pin=True).batches(order, 4)]
        torch.manual_seed(9)
        split = resident.resident_split(ds, cuda, num_workers, channels_last=True)
        device = [(x, y) for x, y in split.batches(order, 4)]
        assert len(loader) == len(device) > 0
        for (xa, ya), (xb, yb) in zip(loader, device):
            assert xb.is_cuda and xb.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())


def test_auto_puts_small_datasets_on_the_gpu(tmp_path):
    parts = _parts(tmp_path)
    assert isinstance(parts.train_set, resident.ResidentImages) and parts.train_set.images.is_cuda
    off = _parts(tmp_path / "off", data_on_device="off")
    assert isinstance(off.train_set, Split)
    splits = make_splits(create_dataset("digits", seed=0), parts.cfg, torch.device("cuda"))
    assert all(isinstance(s, resident.ResidentTensors) and s.tensors[0].is_cuda for s in splits)


def test_two_workers_share_one_gpu_with_jobs_2(tmp_path):
    """`calbench run --gpus 0 --jobs 2`: two worker processes on GPU 0, every run done on cuda."""
    recipe = tmp_path / "two.yaml"
    recipe.write_text("name: two\nseeds: [0, 1]\ndatasets: [digits]\nbackbones: [mlp]\nmethods: [ce, ls]\n"
                      "train: {epochs: 2, batch_size: 64}\nposthoc: [ts]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "calbench.cli", "run", str(recipe), "--gpus", "0", "--jobs", "2",
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "two").glob("*/metrics.json")]
    assert len(runs) == 4 and all(r["status"] == "done" for r in runs)
    assert all("cuda" in str(r["device"]) for r in runs), [r["device"] for r in runs]
    assert all(np.isfinite(r["metrics"]["test"]["acc"]) for r in runs)
