"""The estimator settings that travel with every stored or shown number (docs/metrics.md, "Conventions"):
bins and binning scheme per metric, top-label or class-wise, the scale, and (for intervals) the
interval kind and B. Numbers from different estimators, bins or interval kinds are not comparable;
this record says which were used.

metric_conventions(keys, bins) is what a metrics block of metrics.json stores beside the values
(under "conventions"), what each CSV row's convention columns come from, and what table footnotes say.
A metric declares `binning=` and `scope=` in its @metric decoration; when it does not, they are
derived from what it needs: equal-width bins for the binned sums, class-wise for per-class sums.
"""

from __future__ import annotations

from calbench.metrics.registry import METRICS, resolve_keys

BINNINGS = ("equal-width", "equal-mass", "kernel", "none")
SCOPES = ("top-label", "class-wise")


def binning_of(key: str) -> str:
    spec = METRICS.get(key)
    if spec.binning:
        return spec.binning
    return "equal-width" if spec.needs & {"binned", "classwise"} else "none"


def scope_of(key: str) -> str:
    spec = METRICS.get(key)
    if spec.scope:
        return spec.scope
    return "class-wise" if spec.needs & {"classwise", "brier"} else "top-label"


def metric_conventions(keys=None, bins: int = 15, *, interval: str | None = None, B: int | None = None) -> dict:
    """{"bins", "binning": {key: scheme}, "scope": {key: top-label|class-wise}, "scale": "fraction"} for
    the keys (default: every default metric), plus "interval" and "B" when intervals were computed."""
    keys = resolve_keys(keys, False) if keys is None else tuple(keys)
    out = {"bins": int(bins), "binning": {k: binning_of(k) for k in keys},
           "scope": {k: scope_of(k) for k in keys}, "scale": "fraction"}
    if interval is not None:
        out.update(interval=interval, B=int(B or 0))
    return out


def convention_note(keys, bins: int, interval: str | None = None, B: int = 0) -> str:
    """One footnote line: the bins and scheme of the binned keys, the scope and the interval."""
    schemes: dict = {}
    for k in keys:
        schemes.setdefault(binning_of(k), []).append(METRICS.get(k).header)
    parts = [f"{bins} {scheme} bins: {', '.join(h)}" if scheme in ("equal-width", "equal-mass")
             else f"{scheme}: {', '.join(h)}" for scheme, h in schemes.items() if scheme != "none"]
    classwise = [METRICS.get(k).header for k in keys if scope_of(k) == "class-wise"]
    scope = f"class-wise: {', '.join(classwise)}; others top-label" if classwise else "all top-label"
    line = f"estimators: {'; '.join(parts) or 'no binning'}; {scope}"
    return line + (f"; {interval} bootstrap intervals, B={B}" if interval and B else "")
