"""Build-on-first-use C kernels for the CPU: calbench/methods/*.c (fused losses with their gradients)
and calbench/metrics/*.c (bootstrap kernels). It sits at the bottom of the layers, beside errors.py,
so that metrics (below methods) can build its kernels too; each package names its own sources.

The C source ships with the package; the first call compiles it with the system C compiler
(`$CC`, else cc / gcc / clang) into a cache directory (`$CALBENCH_CACHE`, else
`$XDG_CACHE_HOME/calbench`, else `~/.cache/calbench`), under a name that hashes the source, the
flags, the compiler's version and the machine, so concurrent processes (scheduler workers) share one
build and a stale one is never loaded. The library is written to a temporary file and renamed into
place, so a crash never leaves half a library behind.

Nothing here is required: with no compiler, a failed build, or `CALBENCH_NATIVE=0`, `load()`
returns None and the callers use their pure PyTorch / NumPy path (same values, tested against each
other).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

# -fno-math-errno / -fno-trapping-math let the row loops vectorise; no -ffast-math (it would
# change the process's denormal mode and drop NaN semantics); -ffp-contract=off keeps every
# element's rounding that of the plain build (no fused multiply-adds), whatever the machine.
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
# The machine's full vector width (AVX-512 / AVX2 where present: the exp loops run 4-13x faster
# than at the SSE2 baseline). The build key then includes what -march=native resolves to on this
# machine, so a cache shared between machines never loads another CPU's build.
NATIVE = ["-march=native"]
# OpenMP splits rows over threads. torch's wheels load libgomp on Linux, so the kernel shares
# torch's thread pool (and torch.set_num_threads); elsewhere the build goes single-threaded.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else ["-fopenmp-simd"]


def enabled() -> bool:
    return os.environ.get("CALBENCH_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("CALBENCH_CACHE"):
        return Path(os.environ["CALBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "calbench"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else ""


@functools.cache
def _native_target(compiler: str) -> str | None:
    """The compiler's expansion of -march=native on this machine (its driver's command line, which
    names the CPU and its features), or None where the compiler does not take -march=native."""
    try:
        out = subprocess.run([compiler, *NATIVE, "-###", "-E", "-x", "c", os.devnull],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stderr if out.returncode == 0 else None


def build(source: Path, compiler: str, flags: list[str]) -> Path:
    """Compile `source` (unless an identical build is cached) and return the library's path.
    The key covers the source, the headers beside it (which it may include), the compiler, the
    flags and the machine (with -march=native, the CPU it resolves to)."""
    headers = [h.read_text() for h in sorted(source.parent.glob("*.h"))]
    cpu = (_native_target(compiler) or "") if NATIVE[0] in flags else ""
    key = hashlib.sha256("\0".join([source.read_text(), *headers, compiler, _version(compiler), *flags,
                                    platform.machine(), platform.system(), cpu]).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        out = subprocess.run([compiler, *flags, "-o", tmp, str(source), "-lm"],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "compiler failed")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def load(name: str, *, package: str) -> ctypes.CDLL | None:
    """The compiled library for `calbench/<package>/<name>.c` (package "methods" or "metrics"), or
    None (see the module docstring)."""
    if not enabled():
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    source = Path(__file__).parent / package / f"{name}.c"
    if not source.is_file():
        raise FileNotFoundError(f"no C kernel {source}")
    errors = []
    attempts = [FLAGS + OPENMP, FLAGS]      # retry without OpenMP if its runtime is missing
    if _native_target(compiler) is not None:
        attempts.insert(0, FLAGS + NATIVE + OPENMP)
    for flags in attempts:
        try:
            return ctypes.CDLL(str(build(source, compiler, flags)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
    warnings.warn(f"calbench: could not build the {package}/{name} C kernel ({errors[-1]}); using the "
                  "slower fallback (the PyTorch path for methods, the NumPy path for metrics)",
                  RuntimeWarning, stacklevel=2)
    return None
