"""Forward + backward time of every loss, as a ratio to cross-entropy (B = 128; K = 200 and 1000).

    python benchmarks/bench_losses.py [--rounds 7] [--target-ms 60] [--threads N] [--only ce,mbls]

Each loss is timed in `--rounds` rounds, interleaved with the others so that a slow spell of the
machine hits every loss alike; a round repeats the loss for about `--target-ms`; the best round
counts. Times are per call of `method.loss(logits, labels).backward()` on CPU float32 logits.
"""

from __future__ import annotations

import argparse
import time

import torch

from calbench.methods import create_method, list_methods


def _call(method, logits, labels, features) -> None:
    logits.grad = None
    method.loss(logits, labels, features=features).backward()


def _repeats(method, logits, labels, features, target_s: float) -> int:
    """How many calls fill about `target_s` (at least 1), after a warm-up."""
    start = time.perf_counter()
    _call(method, logits, labels, features)
    _call(method, logits, labels, features)
    one = (time.perf_counter() - start) / 2
    return max(1, min(2000, int(target_s / max(one, 1e-7))))


def bench(names: list[str], k: int, batch: int, rounds: int, target_s: float) -> dict[str, float]:
    logits = (torch.randn(batch, k) * 5).requires_grad_(True)
    labels = torch.randint(0, k, (batch,))
    features = torch.randn(batch, 512)
    methods = {name: create_method(name, k) for name in names}
    reps = {name: _repeats(m, logits, labels, features, target_s) for name, m in methods.items()}
    best = {name: float("inf") for name in names}
    for _ in range(rounds):
        for name, method in methods.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                _call(method, logits, labels, features)
            best[name] = min(best[name], (time.perf_counter() - start) / reps[name])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", default="200,1000", help="comma-separated K values")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--target-ms", type=float, default=60.0, help="length of one round per loss")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated method names (ce is always added)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_methods()
    if args.only:
        names = ["ce"] + [n for n in args.only.split(",") if n != "ce"]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, B = {args.batch}, "
          f"float32, forward + backward, best of {args.rounds} interleaved rounds")
    for k in (int(v) for v in args.classes.split(",")):
        times = bench(names, k, args.batch, args.rounds, args.target_ms / 1e3)
        print(f"\nK = {k}   (ce: {times['ce'] * 1e6:.0f} us)")
        for name, t in times.items():
            print(f"  {name:15s} {t * 1e6:11.0f} us   {t / times['ce']:8.2f} x ce")


if __name__ == "__main__":
    main()
