"""POSTHOC, the registry of post-hoc calibrators: `@POSTHOC.register(name, description=..., paper=...)`
on a `Calibrator` subclass sets its `name` and checks its declarations at import time."""

from __future__ import annotations

from calbench.posthoc.base import OUTPUT_KINDS, Calibrator
from calbench.registry import Registry


class CalibratorRegistry(Registry):
    """A Registry whose entries are Calibrator classes named by their registration."""

    def register(self, name, obj=None, *, description: str = "", paper: str = "", **meta):
        add = super().register(name, description=description, paper=paper, **meta)

        def named(cls):
            if not (isinstance(cls, type) and issubclass(cls, Calibrator)):
                raise TypeError(f"post-hoc calibrator '{name}' must be a Calibrator subclass, got {cls!r}")
            if cls.output not in OUTPUT_KINDS:
                raise TypeError(f"post-hoc calibrator '{name}': output must be one of {OUTPUT_KINDS}, "
                                f"got {cls.output!r}")
            cls.name = name
            return add(cls)

        return named(obj) if obj is not None else named


POSTHOC: CalibratorRegistry = CalibratorRegistry("post-hoc calibrator")
