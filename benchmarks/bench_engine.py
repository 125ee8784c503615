"""What a calbench run costs against a minimal hand-written PyTorch loop, as whole processes.

    python benchmarks/bench_engine.py                 # one quickstart run vs the hand loop, 3 rounds
    python benchmarks/bench_engine.py --rounds 5 --matrix   # and the whole quickstart's wall time

(a) `calbench run` on a one-run recipe (the quickstart's first cell: ce on digits, the MLP, seed 0,
    30 epochs of SGD with its multistep schedule, temperature scaling) in a fresh results folder,
    in a subprocess: recipe check, worker start, training, evaluation, writing and teardown.
(b) the same training written by hand in a script of its own: the same MLP, the same split (the
    indices calbench draws, handed over in a file with the digits arrays), the same epochs, batch
    order and schedule; it saves the test logits and nothing else. Its test logits equal the run's,
    which the benchmark checks, so both processes did the same work.
Both train with one torch thread (CALBENCH_THREADS=1 for calbench; `--jobs 1` alone would give
the run every core). Rounds alternate (a, b, a, b, ...) so that a load change on the machine hits both; the best round
of each is compared. `--matrix` also times `calbench run recipes/quickstart.yaml` once, in a
fresh folder (minutes).

`--against REV` (e.g. `--against 12b6a3b`) times the whole 66-run quickstart of REV's own
recipes/quickstart.yaml (like with like: a later quickstart may evaluate more sets) with REV's code
and with this checkout's code, rounds interleaved (REV, current, REV, ...), each in a fresh results
folder, with the same environment (CALBENCH_THREADS unset: both use their default jobs and
threads), and prints both best walls and the speed-up. REV is checked out with `git worktree add`
into a temporary folder (removed afterwards, also on error) and run as `python -m calbench.cli`
from that folder with PYTHONPATH pointing at it, in this virtual environment.

    python benchmarks/bench_engine.py --against 12b6a3b --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

RECIPE = """\
name: bench
seeds: [0]
datasets: [digits]
backbones: [mlp]
methods: [ce]
train:
  epochs: 30
  batch_size: 64
  optimizer: sgd
  lr: 0.1
  momentum: 0.9
  weight_decay: 5.0e-4
  schedule: {multistep: [20, 25], gamma: 0.1}
posthoc: [ts]
"""

HAND_LOOP = '''\
import sys
import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
data = np.load(sys.argv[1])
x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
train, test = torch.from_numpy(data["train"]), torch.from_numpy(data["test"])
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                      nn.Linear(128, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 25], gamma=0.1)
for epoch in range(30):
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
    if len(order) % 64 == 1:
        order = order[:-1]
    model.train()
    for start in range(0, len(order), 64):
        idx = order[start:start + 64]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    sched.step()
model.eval()
with torch.no_grad():
    np.save(sys.argv[2], model(x[test]).numpy())
'''


def _timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    env = env or {**os.environ, "CALBENCH_THREADS": "1"}     # one torch thread, as the hand loop sets
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench_engine: {' '.join(cmd[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def _hand_inputs(work: Path) -> Path:
    """The digits arrays and calbench's split for seed 0, for the hand loop to read."""
    from calbench.data import create_dataset
    from calbench.data.digits import load_arrays

    x, y = load_arrays()
    splits = create_dataset("digits", seed=0).split_indices
    path = work / "digits.npz"
    np.savez(path, x=x, y=y, train=splits["train"], test=splits["test"])
    return path


def _run_logits(results: Path) -> np.ndarray:
    (preds,) = results.glob("bench/*/predictions.npz")
    return np.load(preds)["test_logits"]


def compare(rounds: int) -> tuple[float, float]:
    """(best calbench run seconds, best hand loop seconds) over alternating rounds."""
    runs, hands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        (work / "bench.yaml").write_text(RECIPE)
        (work / "hand_loop.py").write_text(HAND_LOOP)
        inputs = _hand_inputs(work)
        for r in range(rounds):
            results = work / f"results{r}"
            runs.append(_timed([sys.executable, "-m", "calbench.cli", "run", str(work / "bench.yaml"),
                                "--results", str(results), "--jobs", "1"], REPO))
            hands.append(_timed([sys.executable, str(work / "hand_loop.py"), str(inputs),
                                 str(work / "hand.npy")], work))
            print(f"round {r + 1}: calbench run {runs[-1]:.2f} s, hand loop {hands[-1]:.2f} s", flush=True)
        same = np.array_equal(_run_logits(work / "results0"), np.load(work / "hand.npy"))
        print(f"same test logits: {same}")
    return min(runs), min(hands)


def matrix_seconds() -> float:
    with tempfile.TemporaryDirectory(prefix="bench-engine-matrix-") as tmp:
        return _timed([sys.executable, "-m", "calbench.cli", "run", "recipes/quickstart.yaml",
                       "--results", tmp], REPO)


@contextlib.contextmanager
def worktree(rev: str):
    """A detached `git worktree` of `rev` in a temporary folder, removed on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-rev-"))
    path = tmp / "tree"
    done = subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(f"bench_engine: git worktree add {rev} failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)


def _matrix_env(code: Path) -> dict[str, str]:
    """The environment of a whole-quickstart timing: `code` first on the path, default threads."""
    env = {k: v for k, v in os.environ.items() if k != "CALBENCH_THREADS"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(code)] + [p for p in [env.get("PYTHONPATH")] if p])}


def _cpu_of_children() -> float:
    """User + system seconds of every finished child process so far (workers included: the
    command joins them before it exits)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def against(rev: str, rounds: int) -> tuple[float, float]:
    """(best wall of REV's code, best wall of this checkout's) on REV's quickstart, interleaved.
    Each round also prints the CPU seconds of each command (less sensitive to a loaded machine)."""
    with worktree(rev) as tree, tempfile.TemporaryDirectory(prefix="bench-engine-against-") as tmp:
        recipe = tree / "recipes" / "quickstart.yaml"
        walls: dict[str, list[float]] = {"rev": [], "current": []}
        for r in range(rounds):
            cpu = {}
            for name, code in (("rev", tree), ("current", REPO)):
                results = Path(tmp) / f"{name}{r}"
                before = _cpu_of_children()
                walls[name].append(_timed([sys.executable, "-m", "calbench.cli", "run", str(recipe),
                                           "--results", str(results)], code, _matrix_env(code)))
                cpu[name] = _cpu_of_children() - before
                shutil.rmtree(results, ignore_errors=True)
            print(f"round {r + 1}: {rev} {walls['rev'][-1]:.1f} s wall ({cpu['rev']:.1f} s CPU), current "
                  f"{walls['current'][-1]:.1f} s wall ({cpu['current']:.1f} s CPU) "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    return min(walls["rev"]), min(walls["current"])


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__).splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (best is kept)")
    parser.add_argument("--matrix", action="store_true", help="also time the whole quickstart once")
    parser.add_argument("--against", default=None, metavar="REV",
                        help="also time REV's 66-run quickstart with REV's code and with this code")
    args = parser.parse_args()
    run, hand = compare(max(1, args.rounds))
    print(f"one quickstart run: calbench {run:.2f} s, hand-written loop {hand:.2f} s, ratio {run / hand:.2f}x "
          f"(target <= 1.2x)")
    if args.against:
        old, new = against(args.against, max(1, args.rounds))
        print(f"quickstart of {args.against} (66 runs): {args.against} {old:.1f} s, current {new:.1f} s, "
              f"{old / new:.2f}x faster (target >= 1.5x)")
    if args.matrix:
        print(f"quickstart (66 runs): {matrix_seconds():.1f} s")


if __name__ == "__main__":
    main()
