"""Checkpoints: written atomically, loaded without executing anything, ignored when they are another
run's, and saved only as often as they are worth.

Safety: a results folder may come from someone else (a shared cluster folder, a downloaded store),
so a checkpoint is read with `torch.load(weights_only=True)`, which only rebuilds tensors and plain
containers and never runs code from the file. Everything a run saves is of that kind (model,
optimizer and scheduler state, the method's `state_dict()`, the history). The run id stored in the
file is checked before any of its state is used. A file that cannot be read so (torn, foreign, or
a planted pickle) gets one warning line and the run trains from scratch.

Cost: `torch.save` each epoch was about a tenth of a short run. A checkpoint is written at the end
of an epoch only when CHECKPOINT_INTERVAL_S seconds have passed since the last one (or since the
start), so a run of seconds writes none and a run with minute-long epochs writes one per epoch; a
killed run loses at most that interval plus one epoch. Resume stays exact from whichever epoch was
saved: no RNG state is saved because the engine re-seeds every stream from (seed, epoch).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_INTERVAL_S = 20.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` through a temporary file and a rename (a reader sees the old or the new file).
    The file gets the mode a plain open() would (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _warn(path: Path, why: str) -> None:
    print(f"calbench: warning: {path}: {why}; training this run from scratch", file=sys.stderr)


def load_checkpoint(path: str | Path, run_id: str) -> dict[str, Any] | None:
    """The saved state of run `run_id`, or None when there is none, it is unreadable as plain
    tensors and containers (one warning line), or it belongs to another run (one warning line)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():   # torch's own note on a foreign pickle: the line below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torn, foreign or hostile: never trusted, never fatal
        _warn(path, f"not a readable calbench checkpoint ({type(err).__name__})")
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        _warn(path, "a checkpoint of another run")
        return None
    return state


class CheckpointPolicy:
    """When to save: at an epoch's end once `interval_s` seconds passed since the last save."""

    def __init__(self, interval_s: float | None = None):
        self.interval_s = CHECKPOINT_INTERVAL_S if interval_s is None else float(interval_s)
        self.last = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.interval_s

    def saved(self) -> None:
        self.last = time.perf_counter()
