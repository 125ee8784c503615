"""The method registries: train-time losses (METHODS) and post-hoc calibrators (POSTHOC).

Each family module registers its classes here with `@METHODS.register(name, description=...,
paper=...)`; `calbench.methods` imports every family so that the registries are complete.
"""

from __future__ import annotations

from calbench.registry import Registry

METHODS: Registry = Registry("method")
POSTHOC: Registry = Registry("post-hoc calibrator")
