"""Time calbench's full metric set against torchmetrics' and netcal's ECE on one 1,000,000 x 100 input,
and a B = 1000 bootstrap of every metric on 50,000 x 200.

    python benchmarks/bench_metrics.py [--n 1000000] [--k 100] [--boot-n 50000] [--boot-k 200] [--B 1000]

Prints wall-clock seconds (best of --repeat runs) and ratios calbench / reference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic(n: int, k: int, seed: int = 0, accuracy: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident logits (ECE about 0.2) of a classifier that is right about `accuracy` of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    right = rng.random(n) < accuracy
    target = np.where(right, labels, (labels + rng.integers(1, k, n)) % k)
    logits[np.arange(n), target] += rng.uniform(6.0, 10.0, n).astype(np.float32)
    logits *= np.float32(1.3)
    return logits, labels


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--boot-n", type=int, default=50_000)
    ap.add_argument("--boot-k", type=int, default=200)
    ap.add_argument("--B", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch
    from netcal.metrics import ECE
    from torchmetrics.functional.classification import multiclass_calibration_error

    from calbench.metrics import bootstrap_metrics, compute_metrics

    logits, labels = synthetic(args.n, args.k)
    probs32 = torch.softmax(torch.from_numpy(logits), dim=1)
    probs64 = probs32.double().numpy()
    probs64 /= probs64.sum(axis=1, keepdims=True)
    y_t = torch.from_numpy(labels)
    print(f"input: {args.n:,} x {args.k} (float32 logits; probs for the references), torch threads "
          f"{torch.get_num_threads()}")

    t_logits, m = best_of(lambda: compute_metrics(labels, logits=logits), args.repeat)
    t_probs, _ = best_of(lambda: compute_metrics(labels, probs=probs64), args.repeat)
    t_ece, m_ece = best_of(lambda: compute_metrics(labels, probs=probs64, keys=("ece",)), args.repeat)
    t_tm, tm = best_of(lambda: float(multiclass_calibration_error(probs32, y_t, args.k, n_bins=15, norm="l1")),
                       args.repeat)
    t_nc, nc = best_of(lambda: float(ECE(bins=15).measure(probs64, labels)), 1)
    print(f"calbench all {len(m)} metrics (logits): {t_logits:8.3f} s")
    print(f"calbench all {len(m)} metrics (probs):  {t_probs:8.3f} s")
    print(f"calbench ece only (probs):        {t_ece:8.3f} s   ece = {m_ece['ece']:.8f}")
    print(f"torchmetrics calibration error:   {t_tm:8.3f} s   ece = {tm:.8f}")
    print(f"netcal ECE(bins=15):              {t_nc:8.3f} s   ece = {nc:.8f}")
    print(f"  |calbench - netcal| = {abs(m_ece['ece'] - nc):.1e}; torchmetrics differs by "
          f"{abs(m_ece['ece'] - tm):.1e} because it accumulates in float32 (the gap grows with N)")
    print(f"ratio calbench-all(probs) / torchmetrics: {t_probs / t_tm:6.2f}x")
    print(f"ratio calbench-all(probs) / netcal:       {t_probs / t_nc:6.2f}x")
    print(f"ratio calbench-ece / torchmetrics:        {t_ece / t_tm:6.2f}x")
    print(f"ratio calbench-ece / netcal:              {t_ece / t_nc:6.2f}x")
    del logits, labels, probs32, probs64

    logits, labels = synthetic(args.boot_n, args.boot_k, seed=1)
    t_boot, res = best_of(lambda: bootstrap_metrics(labels, logits=logits, B=args.B, seed=0), 1)
    print(f"bootstrap B={args.B} of all {len(res['point'])} metrics on {args.boot_n:,} x {args.boot_k}: "
          f"{t_boot:8.3f} s")
    for key, (lo, hi) in res["ci"].items():
        print(f"  {key:6s} {res['point'][key]:.6g}  [{lo:.6g}, {hi:.6g}]")


if __name__ == "__main__":
    main()
