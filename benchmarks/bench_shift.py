"""Images/s of the generated corruptions (calbench.shift.corruptions) on the CPU, per family, for
32x32 and 64x64 RGB images (the CIFAR and Tiny-ImageNet severity tables), at severity 3; and the
shift storage of one run for ImageNet-C (75 sets x 50,000 images x 1,000 classes) in both storage
modes of calbench.shift.storage, measured on disk: one set of that size is written as the evaluator
writes it (float16 logits; compact rows with TS fitted on synthetic clean validation logits) and its
file size is multiplied by the 75 sets, which all have that size.

Two references are timed in the same run, on the same tensors: a plain copy (x.clone(), the floor
of any tensor op) and torchvision's gaussian_blur alone (kernel 5, sigma 1; a well-optimised
library op). Each family is printed as images/s and as a ratio to the torchvision reference
(> 1: faster than it). The best of `--repeats` passes is kept, so a busy machine costs less.

    python benchmarks/bench_shift.py [--images 1024] [--batch 256] [--repeats 3] [--threads 0]
                                     [--storage-only] [--no-storage]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
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


def _written_bytes(directory: Path, name: str, arrays: dict) -> int:
    from calbench.runner.store import save_npz_atomic

    path = directory / f"{name}.npz"
    save_npz_atomic(path, **arrays)
    size = path.stat().st_size
    path.unlink()
    return size


def storage(n: int = 50_000, k: int = 1_000, sets: int = 75) -> None:
    """Bytes on disk of one ImageNet-C run in each mode (module docstring)."""
    from calbench.posthoc import fit_calibrator
    from calbench.shift.storage import RUN_BUDGET_BYTES, calibrated_sets, choose_storage, compact_arrays

    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    logits = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    logits[np.arange(n), labels] += 4
    val_y = rng.integers(0, k, 10_000)
    val_z = rng.normal(size=(10_000, k)) * 2
    val_z[np.arange(10_000), val_y] += 4
    ts = fit_calibrator("ts", val_z, val_y)
    base = {"labels": labels, "id": np.array("shift:imagenet-c:fog:3"), "kind": np.array("shift")}
    with tempfile.TemporaryDirectory() as tmp:
        full = _written_bytes(Path(tmp), "full", {**base, "logits": logits.astype(np.float16)})
        start = time.perf_counter()
        rows = compact_arrays(labels, calibrated_sets(logits, {"ts": ts}, k), labelled=True)
        seconds = time.perf_counter() - start
        compact = _written_bytes(Path(tmp), "compact", {**base, **rows})
    print(f"\nImageNet-C shift storage of one run ({sets} sets x {n:,} images x {k:,} classes), measured on disk:")
    for mode, size in (("full (float16 logits)", full), ("compact (rows: none + ts)", compact)):
        print(f"  {mode:28s} {size / 1e6:9.1f} MB per set  {sets * size / 1e9:7.2f} GB per run")
    print(f"  budget {RUN_BUDGET_BYTES / 1e9:.0f} GB per run; storage auto chooses "
          f"{choose_storage('auto', n, k, sets)}; compact rows of one set computed in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--storage-only", action="store_true", help="only the ImageNet-C storage figures")
    parser.add_argument("--no-storage", action="store_true", help="only the corruption throughput")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.storage_only:
        for size in (32, 64):
            run(size, args.images, args.batch, args.repeats)
    if not args.no_storage:
        storage()


if __name__ == "__main__":
    main()
