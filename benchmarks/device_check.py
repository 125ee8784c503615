"""The GPU check of calbench in one scripted call: install, CUDA tests, quickstart on --gpus 0
against the CPU store, and the throughput bench. Logs and JSON go to $OUT (or --out).

    python benchmarks/device_check.py                 # on the GPU machine (OUT set by the device tool)
    python benchmarks/device_check.py --dry --out /tmp/check   # here, on the CPU: the same steps, small

Steps (each a subprocess with its own log and time limit, all inside --budget seconds; a step that
fails or runs out of time is recorded and the next one still runs):
1. env: python, torch, CUDA device; install: `pip install --no-deps --no-build-isolation -e .`
   (and wheels carried in .whl/, e.g. submitit, into /tmp/site on PYTHONPATH when there are any).
2. bench: benchmarks/bench_gpu.py (first, on an idle GPU, since its timings are reported).
3. pytest: `pytest -m cuda tests/gpu` (every method and dataset on cuda, bf16 autocast,
   channels_last, the device-resident loader, two workers over one GPU with --jobs 2).
4. quickstart: `calbench run recipes/quickstart.yaml --gpus 0` into a temporary results folder,
   timed; then every run's test accuracy against benchmarks/quickstart_cpu_accuracies.json (the
   CPU store, same run ids: the device is not part of a run's identity). The check passes when
   every run is done and each (dataset, method) cell's mean over seeds is within 1.5 points of the
   CPU store's; the largest per-run difference is reported too (bf16 autocast changes rounding).
--dry (no GPU): no install, the bench at a tiny CPU size, the quickstart on the CPU for `--only ce`
(its 6 runs must equal the store exactly), so the whole script is exercised end to end.

`--write-cpu-store RESULTS/quickstart` (re)writes the CPU store from a finished CPU quickstart.

With the device tool, one call does it all (about 5-8 minutes expected; nothing is measured yet):
    run(command="python3 benchmarks/device_check.py --out $OUT", timeout_s=600, carry=[".whl"])
(.whl, git-ignored, holds the submitit wheel; calbench's local runner does not import submitit, so
the call also works without it.) At most 8 files come back: env.log, bench_gpu.log, bench_gpu.json,
pytest_cuda.log, quickstart.log, quickstart_compare.json, summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "benchmarks" / "quickstart_cpu_accuracies.json"
TOLERANCE_POINTS = 1.5
TINY_BENCH = ["--device", "cpu", "--steps", "2", "--rounds", "1", "--batch-size", "4", "--image-size", "8",
              "--classes", "5", "--val-images", "8"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="no GPU: the same steps, small, on the CPU")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device_check_out")))
    p.add_argument("--budget", type=float, default=540.0, help="seconds for all steps together")
    p.add_argument("--bench-args", default="--steps 40 --rounds 2", help="bench_gpu.py options on the GPU")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: install,bench,pytest,quickstart")
    p.add_argument("--write-cpu-store", type=Path, default=None, metavar="RESULTS/quickstart")
    p.add_argument("--store-commit", default=None, help="the commit the CPU store was trained at (default HEAD)")
    return p.parse_args(argv)


class Steps:
    """Runs commands with logs under `out`, each within what is left of the budget."""

    def __init__(self, out: Path, budget: float, env: dict):
        self.out, self.deadline, self.env = out, time.monotonic() + budget, env
        self.summary: dict = {"steps": {}}

    def run(self, name: str, cmd: list[str], limit: float, log: str | None = None) -> dict:
        left = self.deadline - time.monotonic()
        timeout = max(1.0, min(limit, left - 5))
        path = self.out / (log or f"{name}.log")
        t0 = time.monotonic()
        with open(path, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        record = {"cmd": " ".join(cmd), "rc": rc, "wall_s": round(time.monotonic() - t0, 1),
                  "limit_s": round(timeout, 1)}
        self.summary["steps"][name] = record
        print(f"[{name}] rc={rc} wall={record['wall_s']} s (limit {record['limit_s']} s) -> {path.name}", flush=True)
        return record


def environment(steps: Steps, dry: bool) -> None:
    probe = ("import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__);"
             "print('cuda', torch.cuda.is_available(), torch.version.cuda);"
             "print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')")
    steps.run("env", [sys.executable, "-c", probe], 60, "env.log")
    if dry or "install" in steps.summary.get("skip", ()):
        return
    steps.run("install", [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "-e", "."], 120, "env.log")
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if wheels:
        steps.run("wheels", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                             "--no-compile", "--no-cache-dir", "--upgrade", "--target", "/tmp/site",
                             *map(str, wheels)], 60, "env.log")


def bench(steps: Steps, args) -> None:
    extra = TINY_BENCH if args.dry else args.bench_args.split()
    json_path = steps.out / "bench_gpu.json"
    steps.run("bench", [sys.executable, "benchmarks/bench_gpu.py", *extra, "--json", str(json_path)], 240, "bench_gpu.log")
    if json_path.is_file():
        steps.summary["bench"] = json.loads(json_path.read_text())["rows"]


def pytest_cuda(steps: Steps) -> None:
    record = steps.run("pytest", [sys.executable, "-m", "pytest", "-m", "cuda", "tests/gpu", "-q", "-rs",
                                  "-p", "no:cacheprovider"], 300, "pytest_cuda.log")
    lines = (steps.out / "pytest_cuda.log").read_text().strip().splitlines()
    record["result"] = lines[-1] if lines else ""
    if not steps.summary["dry"] and "skipped" in record["result"]:
        record["rc"] = "skipped on the GPU machine"     # every CUDA test must run there


def quickstart(steps: Steps, dry: bool) -> None:
    results = Path(tempfile.mkdtemp(prefix="quickstart-"))
    where = ["--device", "cpu", "--only", "ce", "--jobs", "2"] if dry else ["--gpus", "0"]
    steps.run("quickstart", [sys.executable, "-m", "calbench.cli", "run", "recipes/quickstart.yaml", *where,
                             "--results", str(results)], 330)
    report = compare_with_store(results / "quickstart", exact=dry)
    shutil.rmtree(results, ignore_errors=True)
    (steps.out / "quickstart_compare.json").write_text(json.dumps(report, indent=2))
    steps.summary["quickstart_compare"] = {k: v for k, v in report.items() if k != "cells"}


def read_store(folder: Path) -> dict[str, dict]:
    """run id -> {dataset, method_label, seed, status, test_acc} of a results/<recipe> folder."""
    runs = {}
    for path in sorted(folder.glob("*/metrics.json")):
        d = json.loads(path.read_text())
        acc = d.get("metrics", {}).get("test", {}).get("acc")
        runs[path.parent.name] = {"dataset": d.get("dataset"), "method_label": d.get("method_label"),
                                  "seed": d.get("seed"), "status": d.get("status"), "device": d.get("device"),
                                  "test_acc": acc}
    return runs


def compare_with_store(folder: Path, exact: bool = False) -> dict:
    """Every run of `folder` against the CPU store: per-run and per-cell accuracy differences."""
    store = json.loads(STORE.read_text())["runs"]
    runs = read_store(folder) if folder.is_dir() else {}
    missing = sorted(set(store) - set(runs)) if not exact else []
    unknown = sorted(set(runs) - set(store))
    not_done = sorted(k for k, r in runs.items() if r["status"] != "done" or r["test_acc"] is None)
    cells: dict[str, dict] = {}
    for run_id, r in runs.items():
        if run_id in store and run_id not in not_done:
            cell = cells.setdefault(f"{r['dataset']} / {r['method_label']}", {"device": [], "cpu": []})
            cell["device"].append(100 * r["test_acc"])
            cell["cpu"].append(100 * store[run_id]["test_acc"])
    per_run = [abs(a - b) for c in cells.values() for a, b in zip(c["device"], c["cpu"])]
    for c in cells.values():
        c["diff_points"] = sum(c["device"]) / len(c["device"]) - sum(c["cpu"]) / len(c["cpu"])
    worst_cell = max((abs(c["diff_points"]) for c in cells.values()), default=float("nan"))
    limit = 0.0 if exact else TOLERANCE_POINTS
    ok = bool(cells) and not (missing or unknown or not_done) and worst_cell <= limit
    return {"ok": ok, "runs": len(runs), "done": len(runs) - len(not_done), "missing": missing,
            "unknown_run_ids": unknown, "not_done": not_done, "tolerance_points": limit,
            "max_cell_diff_points": worst_cell, "max_run_diff_points": max(per_run, default=float("nan")),
            "cells": cells}


def write_cpu_store(folder: Path, commit: str | None) -> None:
    runs = read_store(folder)
    bad = [k for k, r in runs.items() if r["status"] != "done" or r["device"] != "cpu"]
    if not runs or bad:
        raise SystemExit(f"device_check: {folder} is not a finished CPU store ({len(bad)} runs not done on the cpu)")
    head = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip()
    STORE.write_text(json.dumps({
        "recipe": "recipes/quickstart.yaml", "made_at_commit": head, "device": "cpu",
        "note": "test accuracy of every quickstart run trained on the CPU (`calbench run recipes/quickstart.yaml`); "
                "run ids do not depend on the device, so a GPU store is compared run by run",
        "runs": {k: {key: r[key] for key in ("dataset", "method_label", "seed", "test_acc")} for k, r in runs.items()},
    }, indent=1, sort_keys=True) + "\n")
    print(f"wrote {STORE} ({len(runs)} runs)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write_cpu_store is not None:
        write_cpu_store(args.write_cpu_store, args.store_commit)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    site = "/tmp/site" if (REPO / ".whl").is_dir() and not args.dry else ""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), site, os.environ.get("PYTHONPATH", "")) if p)}
    steps = Steps(args.out, args.budget, env)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    steps.summary.update({"dry": args.dry, "skip": sorted(skip)})
    environment(steps, args.dry)
    for name, step in (("bench", lambda: bench(steps, args)), ("pytest", lambda: pytest_cuda(steps)),
                       ("quickstart", lambda: quickstart(steps, args.dry))):
        if name not in skip:
            step()
    (args.out / "summary.json").write_text(json.dumps(steps.summary, indent=2, default=str))
    print(json.dumps(steps.summary, indent=2, default=str))
    failed = [n for n, s in steps.summary["steps"].items() if s["rc"] != 0]
    compared = steps.summary.get("quickstart_compare", {"ok": "quickstart" in skip})
    return 1 if failed or not compared.get("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
