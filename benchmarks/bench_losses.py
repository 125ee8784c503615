"""Forward + backward time of every registered loss, as a ratio to cross-entropy (B = 128; K = 200, 1000).

    python benchmarks/bench_losses.py [--rounds 15] [--target-ms 40] [--threads 1] [--only mdca,cpc]
                                      [--classes 200,1000] [--pytorch-path] [--clock wall|cpu]

Every method of the METHODS registry is timed the way the engine calls it: a method that declares
`needs_class_counts` first gets long-tailed train counts (`set_class_counts`); one that declares
`needs_features` gets (rows, 512) features; a batch method (its `transform_batch` returns a ctx:
the mixup family) is timed on its LOSS PART, `loss(logits, y~, ctx=ctx)` with as many logit rows
as its transformed batch has (regmixup 2B, rankmixup (1 + copies) B), and its batch transform is
timed apart, on a (B, 3, 32, 32) input. Cross-entropy is timed in the same run on B rows and, for
batch methods, on the same number of rows as their loss part ("x ce(rows)").

Each item is timed in `--rounds` rounds, interleaved with the others so that a slow spell of the
machine hits every item alike; a round repeats the item for about `--target-ms` after one untimed
call; the best round counts. An item whose single call outlasts a round (cpc at large K without
its kernel) is timed after the others, in at most 3 rounds. Times are per call of
`method.loss(...).backward()` on CPU float32 logits; 1 thread unless `--threads` says otherwise
(the C kernels share torch's thread count).

The "path" column says how the loss ran, read from its autograd graph: "C kernel" when a node of
the graph is a calbench C kernel's autograd function (calbench/methods/*.c, built on first use by
calbench/native.py), "fused" when it is a calbench autograd.Function with an analytic
gradient in PyTorch, "autograd" otherwise; "nodes" counts the graph's backward nodes (each is at
least one PyTorch op with its own overhead: about 5-10 us each, against ce's ~100 us at K = 200).
`--pytorch-path` sets CALBENCH_NATIVE=0 before anything loads, so every C kernel is off.
`--clock cpu` times with this thread's CPU clock instead of the wall clock: on a machine shared
with other jobs (load above its core count) the wall clock counts the time this process waited
for a core, the CPU clock much less of it; with 1 thread every kernel runs in this thread.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

BATCH_INPUT = (3, 32, 32)   # the stand-in images that batch transforms mix
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


@dataclass
class Item:
    """One timed callable: a loss's forward + backward, or a batch transform."""

    label: str
    call: Callable[[], None]
    repeats: int = 1
    best: float = float("inf")


def long_tailed_counts(k: int) -> torch.Tensor:
    """Train counts ceil(1000 / k) for class k = 1..K (Zipf): the imbalance of the long-tail benchmarks."""
    return (1000.0 * torch.arange(1, k + 1, dtype=torch.float64) ** -1.0).ceil()


def prepare(name: str, k: int, batch: int, seed: int):
    """(method, rows' targets, ctx, transform callable or None) for one registered method."""
    from calbench.methods import create_method
    method = create_method(name, k)
    if method.needs_class_counts:
        method.set_class_counts(long_tailed_counts(k))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *BATCH_INPUT, generator=g)
    y = torch.randint(0, k, (batch,), generator=g)
    _, targets, ctx = method.transform_batch(x, y, torch.Generator().manual_seed(seed))
    transform = None
    if ctx is not None:
        gen = torch.Generator().manual_seed(seed)
        transform = lambda: method.transform_batch(x, y, gen)   # noqa: E731
    return method, targets, ctx, transform


def loss_call(method, logits, targets, features, ctx) -> Callable[[], None]:
    def call() -> None:
        logits.grad = None
        method.loss(logits, targets, features=features, ctx=ctx).backward()
    return call


def graph_path(loss: torch.Tensor) -> tuple[str, int]:
    """("C kernel" | "fused" | "autograd", number of backward nodes) of a loss's autograd graph."""
    seen, stack, names = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    names = [n for n in names if n != "AccumulateGrad"]
    custom = [n for n in names if n.startswith("_")]   # calbench's autograd.Functions are private
    path = "C kernel" if any("Native" in n for n in custom) else "fused" if custom else "autograd"
    return path, len(names)


def calibrate(item: Item, target_s: float) -> None:
    """Repeats that fill about `target_s` (at least 1), after a warm-up call."""
    item.call()
    start = clock()
    item.call()
    item.call()
    one = (clock() - start) / 2
    item.repeats = max(1, min(5000, int(target_s / max(one, 1e-7))))


def time_rounds(items: list[Item], rounds: int) -> None:
    """Best-of-rounds per call; the items take turns inside each round."""
    for _ in range(rounds):
        for item in items:
            item.call()                     # untimed: absorbs what the previous item left behind
            start = clock()
            for _ in range(item.repeats):
                item.call()
            item.best = min(item.best, (clock() - start) / item.repeats)


def reference_item(rows: int, k: int, refs: dict) -> Item:
    """Cross-entropy on `rows` rows (one per distinct row count), created once."""
    if rows not in refs:
        from calbench.methods import create_method
        logits = (torch.randn(rows, k) * 5).requires_grad_(True)
        targets = torch.randint(0, k, (rows,))
        refs[rows] = Item(f"ce@{rows}", loss_call(create_method("ce", k), logits, targets, None, None))
    return refs[rows]


def build_items(names: list[str], k: int, batch: int):
    """Timed items for every method at K = k, the ce references and the per-method details."""
    refs: dict[int, Item] = {}
    reference_item(batch, k, refs)
    rows_of, details, items = {}, {}, []
    for index, name in enumerate(names):
        method, targets, ctx, transform = prepare(name, k, batch, seed=index)
        rows = targets.shape[0]
        logits = (torch.randn(rows, k) * 5).requires_grad_(True)
        features = torch.randn(rows, 512) if method.needs_features else None
        loss = method.loss(logits, targets, features=features, ctx=ctx)
        details[name] = graph_path(loss)
        rows_of[name] = rows
        items.append(Item(name, loss_call(method, logits, targets, features, ctx)))
        if transform is not None:
            items.append(Item(f"{name}:transform", transform))
        reference_item(rows, k, refs)
    return items, refs, rows_of, details


def bench(names: list[str], k: int, batch: int, rounds: int, target_s: float):
    items, refs, rows_of, details = build_items(names, k, batch)
    every = list(refs.values()) + items
    for item in every:
        calibrate(item, target_s)
    light = [item for item in every if item.repeats > 1]
    heavy = [item for item in every if item.repeats == 1]   # freeing their buffers slows the next item
    time_rounds(light, rounds)
    time_rounds(heavy, min(rounds, 3))
    return {item.label: item.best for item in every}, rows_of, details


def print_table(k: int, batch: int, times: dict, rows_of: dict, details: dict) -> None:
    ce = times[f"ce@{batch}"]
    print(f"\nK = {k}   (ce: {ce * 1e6:.0f} us at {batch} rows)")
    print(f"  {'method':16s} {'rows':>5s} {'us':>10s} {'x ce':>8s} {'x ce(rows)':>10s}  {'path':8s} "
          f"{'nodes':>5s}  batch transform")
    for name, rows in rows_of.items():
        t = times[name]
        path, nodes = details[name]
        same_rows = f"{t / times[f'ce@{rows}']:10.2f}" if rows != batch else f"{'':10s}"
        transform = times.get(f"{name}:transform")
        extra = f"{transform * 1e6:.0f} us per {batch}x{'x'.join(map(str, BATCH_INPUT))} batch" if transform else ""
        print(f"  {name:16s} {rows:5d} {t * 1e6:10.0f} {t / ce:8.2f} {same_rows}  {path:8s} {nodes:5d}  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", default="200,1000", help="comma-separated K values")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=40.0, help="length of one round per item")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, help="comma-separated method names (ce is always timed)")
    parser.add_argument("--pytorch-path", action="store_true", help="every C kernel off (CALBENCH_NATIVE=0)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall clock, or this thread's CPU time (steadier on a loaded machine)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.pytorch_path:
        os.environ["CALBENCH_NATIVE"] = "0"     # before native.load is first called
    from calbench.methods import list_methods
    torch.set_num_threads(args.threads)
    names = list_methods() if not args.only else [n for n in args.only.split(",") if n]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), B = {args.batch}, float32, "
          f"forward + backward, best of {args.rounds} interleaved rounds, {args.clock} clock"
          + (", C kernels off" if args.pytorch_path else ""))
    for k in (int(v) for v in args.classes.split(",")):
        times, rows_of, details = bench(names, k, args.batch, args.rounds, args.target_ms / 1e3)
        print_table(k, args.batch, times, rows_of, details)


if __name__ == "__main__":
    main()
