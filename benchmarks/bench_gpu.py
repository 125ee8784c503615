"""Training images/s of calbench's engine against a minimal hand-written PyTorch loop, on one GPU.

    python benchmarks/bench_gpu.py                          # the Tiny-ImageNet setting on cuda
    python benchmarks/bench_gpu.py --device cpu --steps 2 --batch-size 4 --image-size 16 --classes 10
                                                            # a tiny CPU run (checks the script works)

The setting is the CALS paper's Tiny-ImageNet one: ResNet-50 with the 3x3 stride-1 stem and no
max-pool (`resnet50-tiny`), 64x64 inputs, 200 classes, batch 128, SGD (lr 0.1, momentum 0.9,
weight decay 5e-4), on synthetic uint8 images and labels, for `ce` and `cals-alm` (margin 10, PHR).

(a) calbench: the RunSpec `calbench run` would build from a recipe with these values, trained by
    the engine's own functions as `train_run` calls them (build_run, then loop.train_one_epoch):
    bfloat16 autocast and channels_last on CUDA (the defaults), the data path `calbench run` picks
    (on CUDA the device-resident one: the images sit in GPU memory and every batch is randomly
    cropped (padding 4) and flipped there, as the recipe's transforms say). Only the dataset is
    replaced, by an in-memory bundle shaped like Tiny-ImageNet's.
(b) by hand: the same backbone, images already normalised in GPU memory (no augmentation at all),
    batches drawn by randint, bf16 autocast, channels_last, torch.optim.SGD, the loss written out
    (cross-entropy; for cals-alm plus the PHR penalty at the multipliers' initial values).
Both run in this process on the same device, one warm-up pass each, then rounds that alternate
(a, b, a, b, ...); the best round of each is compared. The ratio calbench / by hand is the figure
that matters. The epoch time implied is 90,000 training images / calbench's rate plus 10,000
validation images / its evaluation rate (the Tiny-ImageNet split). calbench offers no
torch.compile switch, so both sides run eagerly; `--compile-hand` adds a compiled hand loop as an
informative ceiling (it is not what calbench runs).

`--json PATH` writes the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRAIN_IMAGES, VAL_IMAGES = 90_000, 10_000    # Tiny-ImageNet's train / val split (450 / 50 per class)
METHODS = {"ce": {}, "cals-alm": {"margin": 10, "penalty": "phr"}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=60, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--val-images", type=int, default=2048, help="images of the timed evaluation pass")
    p.add_argument("--backbone", default="resnet50-tiny")
    p.add_argument("--methods", default="ce,cals-alm")
    p.add_argument("--data-on-device", default="auto", choices=["auto", "on", "off"],
                   help="calbench's train.data_on_device (auto: resident on CUDA)")
    p.add_argument("--compile-hand", action="store_true", help="also time the hand loop under torch.compile")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def synthetic_bundle(args, n_train: int):
    """A DatasetBundle shaped like Tiny-ImageNet's: uint8 images with its train transform
    (RandomCrop(size, padding 4) + flip) and its test transform."""
    from calbench.data.base import DatasetBundle
    from calbench.data.image_folder import ArrayImages
    from calbench.data import transforms as tf

    rng = np.random.default_rng(0)
    s = args.image_size

    def images(n):
        return ArrayImages(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
                           rng.integers(0, args.classes, n), None)

    train, val = images(n_train), images(args.val_images)
    train.transform, val.transform = tf.small_image_train(s, hflip=True), tf.small_image_test(s)
    return DatasetBundle(name="tiny-imagenet", train=train, val=val, test=val, num_classes=args.classes,
                         class_names=[str(i) for i in range(args.classes)], task="classification",
                         input_shape=(3, s, s), split_indices={}, backbone_options={"in_chans": 3, "input_size": (s, s)})


def run_spec(args, method: str):
    """The RunSpec `calbench run` builds from a recipe with the bench's settings."""
    from calbench.recipe import expand, parse_recipe

    raw = {"name": "bench-gpu", "seeds": [0], "posthoc": [], "backbones": [args.backbone],
           "datasets": [{"name": "tiny-imagenet", "root": "/synthetic"}],
           "methods": [{method: METHODS.get(method, {})}],
           "train": {"epochs": 2, "batch_size": args.batch_size, "optimizer": "sgd", "lr": 0.1,
                     "momentum": 0.9, "weight_decay": 5e-4, "num_workers": 0,
                     "data_on_device": args.data_on_device}}
    return expand(parse_recipe(raw))[0]


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class EngineSide:
    """calbench's engine on the synthetic bundle: build_run once, then one epoch (= `steps`
    batches) per timing, through loop.train_one_epoch as train_run calls it."""

    def __init__(self, args, method: str, dev: torch.device):
        from calbench.engine.build import build_run, configure_threads
        from calbench.engine.loop import seed_everything
        import calbench.data as data

        spec = run_spec(args, method)
        bundle = synthetic_bundle(args, args.batch_size * args.steps)
        configure_threads(dev)
        seed_everything(spec.seed, dev)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True          # as train_run sets it
        real, data.create_dataset = data.create_dataset, lambda *a, **k: bundle
        try:
            self.parts = build_run(spec, dev, None)
        finally:
            data.create_dataset = real
        self.dev, self.epoch = dev, 0
        self.data_path = type(self.parts.train_set).__name__

    def train(self) -> float:
        """Seconds of one epoch of `steps` training steps."""
        from calbench.engine import loop

        sync(self.dev)
        t0 = time.perf_counter()
        loop.train_one_epoch(self.parts, self.epoch)
        sync(self.dev)
        self.epoch += 1
        return time.perf_counter() - t0

    def evaluate(self) -> float:
        from calbench.engine import loop

        sync(self.dev)
        t0 = time.perf_counter()
        loop.validate(self.parts)
        sync(self.dev)
        return time.perf_counter() - t0


def phr_alm_loss(logits: torch.Tensor, y: torch.Tensor, margin: float = 10.0, lam: float = 1e-6,
                 rho: float = 1.0) -> torch.Tensor:
    """CE + mean over N x K of the PHR penalty of h = (max_j z_j - z_k) / margin - 1 (CALS eq. 11,
    App. A eq. 16), written out with the multipliers at their initial values."""
    z = logits.float()
    h = (z.max(dim=1, keepdim=True).values - z) / margin - 1.0
    penalty = torch.where(lam + rho * h >= 0, lam * h + 0.5 * rho * h * h,
                          torch.full_like(h, -lam * lam / (2.0 * rho)))
    return F.cross_entropy(z, y) + penalty.mean()


class HandSide:
    """The minimal loop: normalised images in device memory, randint batches, autocast, SGD."""

    def __init__(self, args, method: str, dev: torch.device, compiled: bool = False):
        from calbench.models import create_backbone

        torch.manual_seed(0)
        s, cuda = args.image_size, dev.type == "cuda"
        self.model = create_backbone(args.backbone, args.classes, in_chans=3, input_size=(s, s)).to(dev)
        fmt = torch.channels_last if cuda else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        n = args.batch_size * 8
        self.x = torch.randn(n, 3, s, s, device=dev).contiguous(memory_format=fmt)
        self.y = torch.randint(0, args.classes, (n,), device=dev)
        self.loss_fn = phr_alm_loss if method == "cals-alm" else F.cross_entropy
        self.step_fn = torch.compile(self._step) if compiled else self._step
        self.args, self.dev, self.cuda = args, dev, cuda

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def train(self) -> float:
        self.model.train()
        sync(self.dev)
        t0 = time.perf_counter()
        for _ in range(self.args.steps):
            idx = torch.randint(0, self.x.shape[0], (self.args.batch_size,), device=self.dev)
            loss = self.step_fn(self.x[idx], self.y[idx])
        if not torch.isfinite(loss):
            raise RuntimeError("the hand loop's loss is not finite")
        sync(self.dev)
        return time.perf_counter() - t0


def bench_method(args, method: str, dev: torch.device) -> dict:
    """Best-of-rounds images/s of both sides for one method (one warm-up pass each)."""
    sides = {"calbench": EngineSide(args, method, dev), "hand": HandSide(args, method, dev)}
    if args.compile_hand:
        sides["hand-compiled"] = HandSide(args, method, dev, compiled=True)
    for side in sides.values():
        side.train()                                   # warm-up: cuDNN autotune, allocator, compile
    best = {name: float("inf") for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            best[name] = min(best[name], side.train())
    images = args.steps * args.batch_size
    rates = {name: images / seconds for name, seconds in best.items()}
    engine = sides["calbench"]
    engine.evaluate()
    eval_rate = args.val_images / min(engine.evaluate() for _ in range(max(1, args.rounds)))
    epoch_s = TRAIN_IMAGES / rates["calbench"] + VAL_IMAGES / eval_rate
    return {"method": method, "images_per_s": rates, "ratio": rates["calbench"] / rates["hand"],
            "eval_images_per_s": eval_rate, "epoch_s": epoch_s, "data_path": engine.data_path}


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    return f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}"


def print_table(rows: list[dict], args, dev: torch.device) -> None:
    print(f"bench_gpu: {args.backbone} {args.image_size}x{args.image_size}, {args.classes} classes, "
          f"batch {args.batch_size}, {args.steps} steps x best of {args.rounds} rounds on {describe(dev)}")
    print("calbench offers no torch.compile switch: both sides run eagerly"
          + (" (hand-compiled: informative ceiling)" if args.compile_hand else ""))
    print(f"{'method':<10} {'calbench img/s':>15} {'hand img/s':>11} {'ratio':>6} {'eval img/s':>11} "
          f"{'epoch s (90k+10k)':>18}  data path")
    for r in rows:
        rates = r["images_per_s"]
        extra = f"  (hand-compiled {rates['hand-compiled']:.0f} img/s)" if "hand-compiled" in rates else ""
        print(f"{r['method']:<10} {rates['calbench']:>15.1f} {rates['hand']:>11.1f} {r['ratio']:>6.3f} "
              f"{r['eval_images_per_s']:>11.1f} {r['epoch_s']:>18.1f}  {r['data_path']}{extra}")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: CUDA is not available here (use --device cpu for a tiny check run)")
    dev = torch.device(args.device)
    rows = [bench_method(args, m.strip(), dev) for m in args.methods.split(",") if m.strip()]
    print_table(rows, args, dev)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": describe(dev), "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
