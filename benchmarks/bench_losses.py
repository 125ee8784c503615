"""Forward + backward time of every loss, as a ratio to cross-entropy (B = 128; K = 200 and 1000).

    python benchmarks/bench_losses.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from calbench.methods import create_method, list_methods


def time_loss(method, logits, labels, features, repeats: int) -> float:
    for _ in range(3):
        logits.grad = None
        method.loss(logits, labels, features=features).backward()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            logits.grad = None
            method.loss(logits, labels, features=features).backward()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B = {args.batch}, fwd+bwd, best of 5")
    for k in (200, 1000):
        logits = (torch.randn(args.batch, k) * 5).requires_grad_(True)
        labels = torch.randint(0, k, (args.batch,))
        features = torch.randn(args.batch, 512)
        times = {name: time_loss(create_method(name, k), logits, labels, features, args.repeats)
                 for name in list_methods()}
        print(f"\nK = {k}   (ce: {times['ce'] * 1e3:.3f} ms)")
        for name, t in times.items():
            print(f"  {name:15s} {t * 1e3:9.3f} ms   {t / times['ce']:6.2f} x ce")


if __name__ == "__main__":
    main()
