"""Time calbench's metrics against torchmetrics on the same float32 probabilities, and measure
calbench's peak memory against the input size.

    python benchmarks/bench_metrics.py [--configs 1000000x100,10000000x10] [--repeat 3] [--boot]

For each configuration (N x K), every library gets the very same float32 (N, K) probability array
(torchmetrics through torch.from_numpy, no copy) and int64 labels. Repeats are interleaved (one
round runs every contender once, in turn), so a load change on the machine hits all of them alike;
the table shows the best (fastest) round, the least disturbed by other load. Ratios:
    ece-only  = calbench compute_metrics(keys=("ece",)) / torchmetrics ECE (norm="l1")
    all       = calbench, every default metric / torchmetrics ECE + MCE + RMSCE (norm l1, max, l2)
    per metric = calbench ece / mce / ece-l2 alone against torchmetrics l1 / max / l2 alone
    peak mem  = tracemalloc peak during calbench's all-metrics call / input bytes (probs + labels);
                the input itself is allocated before tracing starts, so this is the extra memory.
--boot also times a B = 1000 bootstrap of every metric on 50,000 x 200 (`calbench evaluate` as a whole
process, against scipy.stats.bootstrap of ECE alone); --breakdown adds each metric's bootstrap alone.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np


def synthetic(n: int, k: int, seed: int = 0, accuracy: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """float32 softmax probabilities of an over-confident classifier right about `accuracy` of the
    time (ECE about 0.2), built in row blocks so that no float64 (n, k) copy exists."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    probs = np.empty((n, k), dtype=np.float32)
    step = max(1, (1 << 22) // k)
    for s in range(0, n, step):
        e = min(n, s + step)
        z = rng.normal(size=(e - s, k)).astype(np.float32)
        right = rng.random(e - s) < accuracy
        y = labels[s:e]
        target = np.where(right, y, (y + rng.integers(1, k, e - s)) % k)
        z[np.arange(e - s), target] += rng.uniform(2.0, 6.0, e - s).astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs[s:e] = z
    return probs, labels


def contenders(probs: np.ndarray, labels: np.ndarray):
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    from calbench.metrics import compute_metrics

    p_t, y_t, k = torch.from_numpy(probs), torch.from_numpy(labels), probs.shape[1]

    def tm(norm: str) -> float:
        return float(multiclass_calibration_error(p_t, y_t, k, n_bins=15, norm=norm))

    return {
        "calbench ece": lambda: compute_metrics(labels, probs=probs, keys=("ece",))["ece"],
        "torchmetrics ece": lambda: tm("l1"),
        "calbench all": lambda: compute_metrics(labels, probs=probs),
        "torchmetrics ece+mce+rmsce": lambda: (tm("l1"), tm("max"), tm("l2")),
        "calbench mce": lambda: compute_metrics(labels, probs=probs, keys=("mce",))["mce"],
        "torchmetrics mce": lambda: tm("max"),
        "calbench ece-l2": lambda: compute_metrics(labels, probs=probs, keys=("ece-l2",))["ece-l2"],
        "torchmetrics ece-l2": lambda: tm("l2"),
    }


def interleaved(fns: dict, repeat: int) -> tuple[dict, dict]:
    times = {name: [] for name in fns}
    last = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(v) for name, v in times.items()}, last


def peak_ratio(fn, input_bytes: int) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / input_bytes


def run_config(n: int, k: int, repeat: int) -> dict:
    probs, labels = synthetic(n, k)
    fns = contenders(probs, labels)
    med, last = interleaved(fns, repeat)
    mem = peak_ratio(fns["calbench all"], probs.nbytes + labels.nbytes)
    return {"config": f"{n:,} x {k}", "med": med, "last": last, "mem": mem}


def print_table(rows: list[dict]) -> None:
    head = (f"{'N x K (float32 probs)':>22} {'cb ece':>8} {'tm ece':>8} {'ratio':>6} {'cb all':>8} "
            f"{'tm 3':>8} {'ratio':>6} {'peak/in':>8} {'|ece diff|':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        m = r["med"]
        diff = abs(r["last"]["calbench ece"] - r["last"]["torchmetrics ece"])
        print(f"{r['config']:>22} {m['calbench ece']:8.3f} {m['torchmetrics ece']:8.3f} "
              f"{m['calbench ece'] / m['torchmetrics ece']:6.2f} {m['calbench all']:8.3f} "
              f"{m['torchmetrics ece+mce+rmsce']:8.3f} "
              f"{m['calbench all'] / m['torchmetrics ece+mce+rmsce']:6.2f} {r['mem']:8.2f} {diff:10.1e}")
    for r in rows:
        m = r["med"]
        per = ", ".join(f"{key} {m['calbench ' + key] / m['torchmetrics ' + key]:.2f}" for key in ("ece", "mce", "ece-l2"))
        print(f"{r['config']:>22} per metric, calbench / torchmetrics: {per}")
    from calbench.metrics import default_keys

    keys = default_keys()
    print(f"cb all = compute_metrics' default keys ({len(keys)}: {', '.join(keys)}); tm 3 = torchmetrics "
          "ECE + MCE + RMSCE.")
    print("seconds are the best of interleaved rounds; ratio = calbench / torchmetrics; targets: ece "
          "ratio <= 0.7, all and per-metric ratios <= 1.5, peak/in <= 1.2.\n|ece diff|: torchmetrics accumulates in float32.")


def every_key(labels: np.ndarray, scores: np.ndarray) -> list[str]:
    """Every registered metric that needs no input beyond labels and scores (not train class counts)."""
    from calbench.errors import InputError
    from calbench.metrics import METRICS, compute_metrics

    keys = []
    for key in METRICS.names():
        try:
            compute_metrics(labels[:50], logits=scores[:50], keys=(key,))
            keys.append(key)
        except InputError:
            continue
    return keys


def scipy_ece_bootstrap(probs: np.ndarray, labels: np.ndarray, B: int) -> float:
    """Seconds for scipy.stats.bootstrap (percentile, vectorised) of the 15-bin ECE alone."""
    from scipy.stats import bootstrap

    conf = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)

    def ece(r, c, axis=-1):
        r, c = np.atleast_2d(r), np.atleast_2d(c)
        rows, n = r.shape
        b = np.clip(np.ceil(r * 15).astype(np.int64) - 1, 0, 14) + 15 * np.arange(rows)[:, None]
        gap = np.bincount(b.ravel(), (c - r).ravel(), minlength=15 * rows).reshape(rows, 15)
        return np.abs(gap).sum(axis=1) / n

    t = time.perf_counter()
    bootstrap((conf, correct), ece, paired=True, vectorized=True, n_resamples=B, batch=50,
              method="percentile", random_state=0)
    return time.perf_counter() - t


def bootstrap_timing(B: int, workers: int | None = None) -> None:
    """`calbench evaluate --bootstrap B` of every metric on 50,000 x 200 float32 logits, as a whole
    process, against scipy.stats.bootstrap of ECE alone (target: under 5 s). workers: its --workers
    (None: evaluate's default, this machine's cores). The load average is printed beside the figure:
    on a shared machine the whole-process time follows it."""
    import os
    import subprocess
    import sys
    import tempfile

    probs, labels = synthetic(50_000, 200, seed=1)
    logits = np.log(np.maximum(probs, 1e-30)).astype(np.float32)
    keys = every_key(labels, logits)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pred.npz")
        np.savez(path, labels=labels, logits=logits)
        cmd = [sys.executable, "-m", "calbench.cli", "evaluate", path, "--bootstrap", str(B), "--json",
               "--metrics", ",".join(keys)] + ([] if workers is None else ["--workers", str(workers)])
        load = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ours = time.perf_counter() - t
    theirs = scipy_ece_bootstrap(probs, labels, B)
    shown = "default" if workers is None else workers
    print(f"calbench evaluate --bootstrap {B} --workers {shown}, all {len(keys)} metrics, 50,000 x 200 logits "
          f"(whole process): {ours:.2f} s; scipy.stats.bootstrap of ECE alone: {theirs:.2f} s; ratio "
          f"{ours / theirs:.2f}; load average {load:.2f} on {os.cpu_count()} cores")


def bootstrap_breakdown(B: int) -> None:
    """Seconds of bootstrap_metrics(B) of each metric alone, in this process, on the same 50,000 x 200
    logits as bootstrap_timing (where the whole-process figure goes; setup counted in each)."""
    from calbench.metrics import bootstrap_metrics

    probs, labels = synthetic(50_000, 200, seed=1)
    logits = np.log(np.maximum(probs, 1e-30)).astype(np.float32)
    for key in every_key(labels, logits):
        t = time.perf_counter()
        bootstrap_metrics(labels, logits=logits, B=B, keys=(key,))
        print(f"  {key:>14}: {time.perf_counter() - t:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="1000000x100,10000000x10", help="comma-separated NxK")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--boot", action="store_true", help="also time a B = 1000 bootstrap")
    ap.add_argument("--B", type=int, default=1000)
    ap.add_argument("--breakdown", action="store_true", help="with --boot: each metric's bootstrap alone")
    ap.add_argument("--workers", type=int, default=None, help="with --boot: calbench evaluate --workers")
    args = ap.parse_args()
    import torch

    print(f"torch threads {torch.get_num_threads()} (torchmetrics); calbench runs in numpy, one thread")
    rows = []
    for cfg in args.configs.split(","):
        n, k = (int(v) for v in cfg.lower().split("x"))
        rows.append(run_config(n, k, args.repeat))
    print_table(rows)
    if args.boot:
        bootstrap_timing(args.B, args.workers)
        if args.breakdown:
            bootstrap_breakdown(args.B)


if __name__ == "__main__":
    main()
