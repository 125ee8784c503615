"""The metric registry: one function and one decoration per metric (docs/metrics.md).

A metric is `fn(stats, weights)`: `stats` is the SampleStats of one prediction set (stats.py) and
`weights` is None for the point estimate or a (b, n) float64 matrix of bootstrap counts (how often
each sample was drawn; columns follow the sample order of `stats`), in which case `fn` returns one
value per row. That is how a metric is resampled: the bootstrap calls the same function with count
weights. A metric that cannot take weights declares `resample="explicit"` and the bootstrap
recomputes it on each explicit resample instead.

`needs` names the per-sample quantities the single pass over the scores must produce for it (see
stats.NEEDS); compute_metrics computes only what the requested keys need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from calbench.errors import UnknownNameError
from calbench.registry import Registry, unknown_name_message

RESAMPLE_KINDS = ("weights", "explicit")


@dataclass(frozen=True)
class MetricSpec:
    key: str
    name: str
    higher_is_better: bool
    percent: bool            # tables show the value x100 (stored as a fraction)
    header: str              # table column header
    definition: str          # one line, for `calbench list metrics`
    fn: Callable
    needs: frozenset
    segmentation_only: bool = False
    default: bool = True     # part of the default key set
    resample: str = "weights"
    unit: str = ""           # shown by `calbench evaluate` for non-percent metrics
    binning: str = ""        # equal-width | equal-mass | kernel | none; "" = derived (conventions.py)
    scope: str = ""          # top-label | class-wise; "" = derived (conventions.py)


METRICS: Registry[MetricSpec] = Registry("metric")


def metric(key: str, *, name: str, higher_is_better: bool, percent: bool, header: str | None = None,
           definition: str, needs=(), segmentation_only: bool = False, default: bool = True,
           resample: str = "weights", unit: str = "", binning: str = "", scope: str = "") -> Callable:
    """Register `fn(stats, weights)` under `key` with the facts every table and listing needs."""
    from calbench.metrics.stats import NEEDS

    unknown = set(needs) - set(NEEDS)
    if unknown or resample not in RESAMPLE_KINDS:
        raise ValueError(f"metric '{key}': unknown needs {sorted(unknown)} or resample kind '{resample}'")

    def register(fn: Callable) -> Callable:
        spec = MetricSpec(key, name, higher_is_better, percent, header or key.upper(), definition, fn,
                          frozenset(needs), segmentation_only, default, resample, unit, binning, scope)
        METRICS.register(key, spec, description=definition)
        return fn

    return register


def default_keys(segmentation: bool = False) -> tuple[str, ...]:
    """The keys computed when none are asked for: every default metric (segmentation-only ones too
    for segmentation inputs)."""
    return tuple(s.key for s in specs() if s.default and (segmentation or not s.segmentation_only))


def specs() -> list[MetricSpec]:
    return [e.obj for e in METRICS.entries()]


def resolve_keys(keys, segmentation: bool) -> tuple[str, ...]:
    """The requested keys in registry order; default_keys(segmentation) when keys is None."""
    if keys is None:
        return default_keys(segmentation)
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    names = METRICS.names()
    for k in keys:
        if k not in METRICS:
            raise UnknownNameError(unknown_name_message("metric", k, names))
    return tuple(k for k in names if k in keys)
