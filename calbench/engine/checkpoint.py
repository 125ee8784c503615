"""Per-epoch checkpoints: written atomically, ignored when they belong to another run id.

No RNG states are saved: the engine re-seeds torch, numpy and random from (seed, epoch) at the
start of every epoch, so a run resumed at epoch e draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, run_id: str) -> dict[str, Any] | None:
    """The saved state, or None when there is none, it is unreadable, or it is another run's."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: start the run again rather than fail it
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        return None
    return state
