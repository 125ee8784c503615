"""The results store: results/<recipe>/<run_id>/ with atomic writes (temporary file + rename).

metrics.json is written last; a run is done when it holds status "done" and its predictions exist,
and a done run is never recomputed. See results/README.md for the layout.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from calbench.errors import InputError


def run_dir(results: str | Path, recipe: str, run_id: str) -> Path:
    return Path(results) / recipe / run_id


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n").encode()
    _atomic_write(Path(path), lambda h: h.write(data))


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, allow_nan=False, default=_json_default) + "\n" for r in rows).encode()
    _atomic_write(Path(path), lambda h: h.write(data))


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    _atomic_write(Path(path), lambda h: np.savez(h, **arrays))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Parse a metrics.json; a corrupt or foreign file raises InputError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: corrupt metrics file ({err.__class__.__name__}: {err})") from None
    if not isinstance(data, dict) or "status" not in data or "run_id" not in data:
        raise InputError(f"{path}: not a calbench metrics file (no run_id/status)")
    return data


def is_done(directory: str | Path) -> bool:
    directory = Path(directory)
    try:
        data = read_metrics(directory / "metrics.json")
    except InputError:
        return False
    return data.get("status") == "done" and (directory / "predictions.npz").is_file()


def write_recipe_json(results: str | Path, recipe, specs) -> Path:
    """results/<recipe>/recipe.json: the resolved recipe, its ordered axes and every run id."""
    path = Path(results) / recipe.name / "recipe.json"
    methods: list[str] = []
    for s in specs:
        if s.method_label not in methods:
            methods.append(s.method_label)
    write_json_atomic(path, {
        "schema": 1, "name": recipe.name, "path": str(recipe.path), "description": recipe.description,
        "seeds": recipe.seeds, "methods": methods,
        "datasets": [d["name"] for d in recipe.datasets],
        "backbones": [b for b, _ in recipe.backbones],
        "posthoc": recipe.posthoc,
        "runs": [{"run_id": s.run_id, "method": s.method, "method_label": s.method_label,
                  "dataset": s.dataset, "backbone": s.backbone, "seed": s.seed, "order": s.order}
                 for s in specs],
    })
    return path
