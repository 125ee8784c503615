"""The results store: results/<recipe>/<run_id>/ with atomic writes (temporary file + rename).

metrics.json is written last; a run is done when it holds status "done" and its predictions.npz is
a readable archive of the expected arrays, and a done run is never recomputed. See results/README.md for the layout.
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


def _umask() -> int:
    """The process's umask (read by setting and restoring it; there is no getter before 3.13)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, rename: a reader (or a process
    killed mid-write) sees the old file or the new one, never a part.

    The file gets the mode a plain open() would (0666 minus the umask), not mkstemp's 0600, so a
    results folder shared by a group stays readable by it. A failing write (a full disk) raises an
    OSError naming `path` (the low-level errors from write/fsync name no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename in (None, tmp):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n").encode()
    _atomic_write(Path(path), lambda h: h.write(data))


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, allow_nan=False, default=_json_default) + "\n" for r in rows).encode()
    _atomic_write(Path(path), lambda h: h.write(data))


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    _atomic_write(Path(path), lambda h: np.savez(h, **arrays))


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float written as the text "nan", "inf" or "-inf" (strict JSON
    has no such numbers): used where a record must be written whatever it holds (a failure caused
    by the very value, a config echoed back)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return str(float(obj))
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    try:
        return _json_default(obj)
    except TypeError:
        return repr(obj)


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
    except OSError as err:              # a path under a file, no permission, ...
        raise InputError(f"{path}: unreadable ({err.strerror or type(err).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: corrupt metrics file ({err.__class__.__name__}: {err})") from None
    if not isinstance(data, dict) or "status" not in data or "run_id" not in data:
        raise InputError(f"{path}: not a calbench metrics file (no run_id/status)")
    return data


PREDICTION_KEYS = ("test_logits", "test_labels", "val_logits", "val_labels")


def predictions_problem(path: str | Path) -> str | None:
    """Why a predictions.npz cannot back a done run (None when it can), without unpickling anything.

    Cheap on purpose (it runs for every run of a matrix before training): the zip's central
    directory is at the end of the file, so a truncated file fails to open; every expected array
    must be listed, and every member must lie inside the file. Array contents are not decoded.
    """
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{path}: not a readable npz ({type(err).__name__}: {err})"
    names = {m.filename.removesuffix(".npy") for m in members}
    missing = [k for k in PREDICTION_KEYS if k not in names]
    if missing:
        return f"{path}: no array {missing[0]!r}"
    if any(m.header_offset + m.compress_size > size for m in members):
        return f"{path}: truncated"
    return None


def is_done(directory: str | Path) -> bool:
    """metrics.json says done AND predictions.npz is a readable archive of the expected arrays
    (a run whose predictions were damaged after it finished is trained again)."""
    directory = Path(directory)
    try:
        data = read_metrics(directory / "metrics.json")
    except InputError:
        return False
    return data.get("status") == "done" and predictions_problem(directory / "predictions.npz") is None


def _job_state(run_dir: Path, job: dict) -> tuple[str, str]:
    """queued / running / failed for a submitted job, from submitit's own files (no sacct call;
    nothing is unpickled: only whether submitit's files exist)."""
    from submitit.core.utils import JobPaths

    folder = Path(str(job.get("folder", "")))
    if not folder.is_absolute():
        folder = run_dir.parent / folder
    paths = JobPaths(folder, job_id=str(job.get("job_id", "")), task_id=0)
    if paths.result_pickle.exists():
        return "failed", f"job {job.get('job_id')} ended without metrics.json (see {paths.stderr})"
    if paths.stdout.exists() or paths.stderr.exists():
        return "running", ""
    return "queued", ""


def _metrics_state(path: Path) -> tuple[str, str]:
    """(state, reason) of an existing metrics.json; a damaged file is a failed run naming the file."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return "failed", f"{path}: unreadable metrics file ({type(err).__name__}: {err})"
    if not isinstance(obj, dict):
        return "failed", f"{path}: not a calbench metrics file (a JSON {type(obj).__name__}, not an object)"
    if obj.get("status") == "done":
        problem = predictions_problem(path.parent / "predictions.npz")
        return ("done", "") if problem is None else ("failed", f"done but {problem}")
    return "failed", str(obj.get("reason") or obj.get("status"))


def run_state(run_dir: Path) -> tuple[str, str]:
    """(state, reason) of one run directory, read from the store only (local runs and submitit jobs):

    done     metrics.json with status "done" and usable predictions
    failed   metrics.json otherwise (failed, unreadable, damaged predictions), or a submitted job
             that ended (submitit wrote its result file) without writing metrics.json
    running  checkpoint.pt without metrics.json (a local run in progress, or one interrupted:
             `calbench run` resumes it), or a submitted job whose log exists (it has started)
    queued   a submitted job (job.json) that has not started yet
    pending  none of the above
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        return _metrics_state(metrics)
    job_file = run_dir / "job.json"
    if job_file.exists():
        try:
            job = json.loads(job_file.read_text())
            return _job_state(run_dir, job if isinstance(job, dict) else {})
        except (OSError, ValueError):
            return "queued", ""
    if (run_dir / "checkpoint.pt").exists():
        return "running", ""
    return "pending", ""


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
        "posthoc": recipe.posthoc, "select": getattr(recipe, "select", None),
        "runs": [{"run_id": s.run_id, "method": s.method, "method_label": s.method_label,
                  "dataset": s.dataset, "backbone": s.backbone, "seed": s.seed, "order": s.order}
                 for s in specs],
    })
    return path
