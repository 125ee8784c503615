"""Images/s of the generated corruptions (calbench.shift.corruptions) on the CPU, per family, for
32x32 and 64x64 RGB images (the CIFAR and Tiny-ImageNet severity tables), at severity 3.

Two references are timed in the same run, on the same tensors: a plain copy (x.clone(), the floor
of any tensor op) and torchvision's gaussian_blur alone (kernel 5, sigma 1; a well-optimised
library op). Each family is printed as images/s and as a ratio to the torchvision reference
(> 1: faster than it). The best of `--repeats` passes is kept, so a busy machine costs less.

    python benchmarks/bench_shift.py [--images 1024] [--batch 256] [--repeats 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from calbench.shift.corruptions import CORRUPTIONS, corrupt, generator_for


def best_rate(fn, x: torch.Tensor, batch: int, repeats: int) -> float:
    """Images per second of fn(batch tensor, batch index) over x, best of `repeats` passes."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for k, i in enumerate(range(0, len(x), batch)):
            fn(x[i:i + batch], k)
        best = max(best, len(x) / (time.perf_counter() - start))
    return best


def references(batch: int):
    from torchvision.transforms.functional import gaussian_blur

    return {"copy (x.clone())": lambda b, k: b.clone(),
            "torchvision gaussian_blur(5, 1.0)": lambda b, k: gaussian_blur(b, [5, 5], [1.0, 1.0])}


def run(size: int, images: int, batch: int, repeats: int) -> None:
    x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    refs = {name: best_rate(fn, x, batch, repeats) for name, fn in references(batch).items()}
    tv = refs["torchvision gaussian_blur(5, 1.0)"]
    print(f"\n{size}x{size} RGB, {images} images, batches of {batch}, severity 3")
    print(f"{'operation':36s} {'images/s':>12s} {'vs tv blur':>11s}")
    for name, rate in refs.items():
        print(f"{name:36s} {rate:12,.0f} {rate / tv:10.2f}x")
    for name in CORRUPTIONS.names():
        rate = best_rate(lambda b, k, n=name: corrupt(b, n, 3, generator_for(0, n, 3, k)), x, batch, repeats)
        print(f"{name:36s} {rate:12,.0f} {rate / tv:10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for size in (32, 64):
        run(size, args.images, args.batch, args.repeats)


if __name__ == "__main__":
    main()
