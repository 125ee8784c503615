"""benchmarks/bench_gpu.py works: a tiny CPU run (2 steps, 8x8 images) goes through both sides and
the table (the GPU figures come from the device check, benchmarks/device_check.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from . import needs_cuda

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
TINY = ["--steps", "2", "--rounds", "1", "--batch-size", "4", "--image-size", "8", "--classes", "5",
        "--val-images", "8"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("data_on_device,path", [("auto", "Split"), ("on", "ResidentImages")])
def test_bench_gpu_runs_on_the_cpu(tmp_path, capsys, data_on_device, path):
    out = tmp_path / "bench.json"
    rows = _bench().main(["--device", "cpu", *TINY, "--data-on-device", data_on_device, "--json", str(out)])
    assert [r["method"] for r in rows] == ["ce", "cals-alm"]
    for r in rows:
        assert r["ratio"] > 0 and r["epoch_s"] > 0 and r["data_path"] == path
        assert set(r["images_per_s"]) == {"calbench", "hand"}
    assert json.loads(out.read_text())["rows"][0]["method"] == "ce"
    assert "ratio" in capsys.readouterr().out


def test_the_hand_alm_loss_is_calbench_cals_alm_at_its_initial_multipliers():
    """The hand loop's cals-alm loss equals the method's (same values at the start of training)."""
    import torch

    from calbench.methods import create_method

    logits = torch.randn(16, 7, dtype=torch.float64) * 8
    y = torch.randint(0, 7, (16,))
    method = create_method("cals-alm", 7, margin=10, penalty="phr").double()
    want = method.loss(logits, y)
    got = _bench().phr_alm_loss(logits.float(), y)
    assert abs(float(got) - float(want)) < 1e-5 * max(1.0, abs(float(want)))


@pytest.mark.cuda
@needs_cuda
def test_bench_gpu_runs_on_cuda():
    rows = _bench().main(["--device", "cuda", *TINY])
    assert all(r["data_path"] == "ResidentImages" and r["ratio"] > 0 for r in rows)
