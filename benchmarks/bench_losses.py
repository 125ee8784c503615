"""Forward + backward time of every loss, as a ratio to cross-entropy (B = 128; K = 200 and 1000).

    python benchmarks/bench_losses.py [--rounds 15] [--target-ms 40] [--threads N] [--only ce,mbls]
                                      [--pytorch-path]

Each loss is timed in `--rounds` rounds, interleaved with the others so that a slow spell of the
machine hits every loss alike; a round repeats the loss for about `--target-ms` after one untimed
call; the best round counts. A loss whose single call outlasts a round (cpc at large K) is timed
after the others, in at most 3 rounds, so that freeing its huge buffers does not slow its neighbours.
Times are per call of `method.loss(logits, labels).backward()` on CPU float32 logits.
mbls, cals-hr and cals-alm (PHR) run the C kernel of calbench/methods/margin_penalty.c when it
builds (the header line says which); `--pytorch-path` times their PyTorch fallback instead.
"""

from __future__ import annotations

import argparse
import time

import torch

from calbench.methods import create_method, list_methods, margin_penalty


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
    # Losses slower than a whole round (cpc: O(N K^2) buffers of hundreds of MB) are timed after
    # the others, in 3 rounds: freeing their buffers slows down whichever loss is timed next.
    light = [name for name in names if reps[name] > 1]
    heavy = [name for name in names if reps[name] == 1]
    for group, group_rounds in ((light, rounds), (heavy, min(rounds, 3))):
        for _ in range(group_rounds):
            for name in group:
                method = methods[name]
                _call(method, logits, labels, features)  # untimed: absorbs what the previous loss left
                start = time.perf_counter()
                for _ in range(reps[name]):
                    _call(method, logits, labels, features)
                best[name] = min(best[name], (time.perf_counter() - start) / reps[name])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", default="200,1000", help="comma-separated K values")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=40.0, help="length of one round per loss")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated method names (ce is always added)")
    parser.add_argument("--pytorch-path", action="store_true",
                        help="time the PyTorch fallback of mbls / cals-hr / cals-alm, not the C kernel")
    args = parser.parse_args()
    if args.pytorch_path:
        margin_penalty._kernels = lambda: {}
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_methods()
    if args.only:
        names = ["ce"] + [n for n in args.only.split(",") if n != "ce"]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, B = {args.batch}, "
          f"float32, forward + backward, best of {args.rounds} interleaved rounds")
    print("mbls / cals-hr / cals-alm: " + ("C kernel (calbench/methods/margin_penalty.c)"
                                           if margin_penalty._kernels() else "PyTorch path"))
    for k in (int(v) for v in args.classes.split(",")):
        times = bench(names, k, args.batch, args.rounds, args.target_ms / 1e3)
        print(f"\nK = {k}   (ce: {times['ce'] * 1e6:.0f} us)")
        for name, t in times.items():
            print(f"  {name:15s} {t * 1e6:11.0f} us   {t / times['ce']:8.2f} x ce")


if __name__ == "__main__":
    main()
