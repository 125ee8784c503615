"""benchmarks/device_check.py's comparison of a GPU quickstart store with the committed CPU store
(run ids are device-independent): a cell passes within 1.5 points of the CPU mean, and a missing,
unfinished or unknown run fails the check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"


def _check():
    spec = importlib.util.spec_from_file_location("device_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _store_like(folder: Path, store: dict, shift_points: float, drop: int = 0, status: str = "done") -> None:
    for n, (run_id, r) in enumerate(sorted(store.items())):
        if n < drop:
            continue
        (folder / run_id).mkdir(parents=True)
        acc = r["test_acc"] + shift_points / 100
        (folder / run_id / "metrics.json").write_text(json.dumps({
            "dataset": r["dataset"], "method_label": r["method_label"], "seed": r["seed"], "device": "cuda",
            "status": status if n == drop else "done", "metrics": {"test": {"acc": acc}}}))


def test_the_committed_cpu_store_covers_the_quickstart():
    from calbench.recipe import expand, load_recipe

    store = json.loads(_check().STORE.read_text())["runs"]
    ids = {s.run_id for s in expand(load_recipe(CHECK.parents[1] / "recipes" / "quickstart.yaml"))}
    assert set(store) == ids, "benchmarks/quickstart_cpu_accuracies.json is stale: rewrite it (--write-cpu-store)"


def test_within_tolerance_passes_and_beyond_or_incomplete_fails(tmp_path):
    check = _check()
    store = json.loads(check.STORE.read_text())["runs"]
    cases = {"close": (1.4, 0, "done", True), "far": (1.6, 0, "done", False),
             "missing": (0.0, 1, "done", False), "failed": (0.0, 0, "failed", False)}
    for name, (shift, drop, status, ok) in cases.items():
        _store_like(tmp_path / name, store, shift, drop, status)
        report = check.compare_with_store(tmp_path / name)
        assert report["ok"] is ok, (name, {k: v for k, v in report.items() if k != "cells"})
    assert abs(check.compare_with_store(tmp_path / "close")["max_cell_diff_points"] - 1.4) < 1e-9
