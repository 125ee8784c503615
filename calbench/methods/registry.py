"""The method registry: train-time losses (METHODS); post-hoc calibrators are in calbench.posthoc.

Each family module registers its classes here with `@METHODS.register(name, description=...,
paper=...)`; `calbench.methods` imports every family so that the registry is complete.
"""

from __future__ import annotations

from calbench.registry import Registry

METHODS: Registry = Registry("method")
