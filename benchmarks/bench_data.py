"""Images/s of Tiny-ImageNet-format JPEG decode + training augmentation, on this machine.

Builds a synthetic Tiny-ImageNet tree (64x64 JPEGs, wnids.txt, val/val_annotations.txt) in a temp
dir, loads it through create_dataset('tiny-imagenet') like a user run, and iterates the train
split with a DataLoader at the engine's default settings (calbench.recipe.TrainConfig: batch_size
128, num_workers 2, shuffled, no pinned memory on the CPU) through the paper's RandomCrop(64, pad 4)
+ flip + normalise. num_workers=0 (decode in the main process) is also timed.

    python benchmarks/bench_data.py [--classes 20] [--per-class 250] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from calbench.data import create_dataset


def default_loader_settings() -> dict:
    """The DataLoader settings the engine uses for on-disk datasets with a default recipe."""
    from calbench.recipe import TrainConfig

    cfg = TrainConfig()
    return {"batch_size": cfg.batch_size, "shuffle": True, "num_workers": cfg.num_workers,
            "persistent_workers": False, "pin_memory": False}


def make_tree(root: Path, classes: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    wnids = [f"n{i:08d}" for i in range(classes)]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # natural-ish: smooth plus noise
    lines = []
    for c, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(base.astype(int) // 2 + rng.integers(0, 128, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{w}_{i}.JPEG", quality=90)
        Image.fromarray(base).save(root / "val" / "images" / f"val_{c}.JPEG")
        lines.append(f"val_{c}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def images_per_second(dataset, epochs: int, **settings) -> float:
    loader = DataLoader(dataset, **settings)
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _y in loader:
            n += x.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tiny-imagenet-200"
        make_tree(root, args.classes, args.per_class)
        bundle = create_dataset("tiny-imagenet", root, seed=0, val_per_class=10)
        settings = default_loader_settings()
        print(f"cpus={os.cpu_count()} train images={len(bundle.train)} epochs={args.epochs}")
        rate = images_per_second(bundle.train, args.epochs, **settings)
        print(f"default loader (batch {settings['batch_size']}, num_workers {settings['num_workers']}): "
              f"{rate:,.0f} images/s")
        rate0 = images_per_second(bundle.train, args.epochs, **{**settings, "num_workers": 0})
        print(f"num_workers 0 (main process): {rate0:,.0f} images/s")


if __name__ == "__main__":
    main()
