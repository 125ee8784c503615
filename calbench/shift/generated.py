"""Evaluation sets computed from the clean test set, no download: every corruption family of
calbench.shift.corruptions as a shift set (one EvalSet per severity), and the generated OOD sets
(Gaussian noise, uniform noise, inverted images) matching the clean test set's shape and count.

Corruptions act on the clean test images mapped back to [0, 1] (x * std + mean of the clean test
transform), then the clean normalisation is applied again; severity 0 gives the clean tensors
exactly. The generator of chunk k is generator_for(seed, family, severity, k), so the images do not
depend on the order chunks are read in; chunk_size is part of a set's definition (default 256).
"""

from __future__ import annotations

from functools import partial

import torch

from calbench.shift.corruptions import CORRUPTIONS, PROFILES, corrupt, generator_for, profile_for
from calbench.shift.sets import (CleanTransformed, EvalSet, GeneratedImages, OOD_LABEL, UnitRange, eval_set,
                                 parse_severities, require_images)
from calbench.errors import ConfigError

CHUNK = 256
GENERATED = "none: computed from the clean test set"


def _corruption_fn(name: str, severity: int, seed: int, profile: str):
    """fn(unit images, chunk) of one (family, severity); None at severity 0 (the clean images)."""
    if severity == 0:
        return None
    return lambda unit, chunk: corrupt(unit, name, severity, generator_for(seed, name, severity, chunk), profile)


def build_corrupted(name: str, clean, root=None, seed: int = 0, severities=(1, 2, 3, 4, 5),
                    profile: str | None = None, chunk_size: int = CHUNK) -> list[EvalSet]:
    """One EvalSet per severity of corruption `name` applied to the clean test set."""
    require_images(name, clean)
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"eval set '{name}': profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    profile = profile or profile_for(*clean.input_shape[-2:])
    sets = []
    for s in parse_severities(name, severities, lowest=0):
        opener = partial(CleanTransformed, clean.test, _corruption_fn(name, s, seed, profile), chunk_size)
        sets.append(EvalSet(id=f"shift:{name}:{s}", kind="shift", source=name, family=name, severity=s,
                            opener=opener, chunk_size=chunk_size,
                            meta={"family": name, "severity": s, "generated": True, "profile": profile,
                                  "seed": seed, "effect": CORRUPTIONS.entry(name).meta["effect"]}))
    return sets


def _register_corruptions() -> None:
    """Each registered corruption is a shift set of the same name (a new family is one function)."""
    for entry in CORRUPTIONS.entries():
        def build(clean, root=None, seed: int = 0, severities=(1, 2, 3, 4, 5), profile: str | None = None,
                  chunk_size: int = CHUNK, _name=entry.name):
            return build_corrupted(_name, clean, root, seed, severities, profile, chunk_size)

        build.__signature__ = _public_signature(build)
        eval_set(entry.name, kind="shift", layout=GENERATED,
                 description=f"generated {entry.name.replace('_', ' ')} at severities 1-5 (Hendrycks & Dietterich)",
                 paper="Hendrycks & Dietterich, ICLR 2019")(build)


def _public_signature(fn):
    """fn's signature without the bound `_name` parameter, so it is no option."""
    import inspect

    sig = inspect.signature(fn)
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if not n.startswith("_")])


_register_corruptions()


# ---------------------------------------------------------------- generated OOD


def _ood_set(name: str, dataset_opener, chunk_size: int, **meta) -> EvalSet:
    return EvalSet(id=f"ood:{name}", kind="ood", source=name, family=name, severity=None,
                   opener=dataset_opener, chunk_size=chunk_size, meta={"generated": True, **meta})


def _noise(kind: str, seed: int, shape: tuple[int, ...], count: int, chunk: int) -> torch.Tensor:
    g = generator_for(seed, f"ood-{kind}", 0, chunk)
    if kind == "gaussian":
        return (0.5 + torch.randn((count, *shape), generator=g)).clamp_(0.0, 1.0)
    return torch.rand((count, *shape), generator=g)


def _build_noise(kind: str, clean, seed: int, chunk_size: int) -> list[EvalSet]:
    require_images(kind, clean)
    shape = tuple(clean.input_shape)
    fn = partial(_noise, kind, seed, shape)
    opener = partial(GeneratedImages, len(clean.test), fn, UnitRange.of(clean.test), chunk_size)
    return [_ood_set(kind, opener, chunk_size, seed=seed)]


@eval_set("gaussian", kind="ood", layout=GENERATED,
          description="OOD: i.i.d. Gaussian noise images, mean 0.5, std 1, clipped to [0, 1]",
          paper="Hendrycks, Mazeika & Dietterich, ICLR 2019 (Outlier Exposure)")
def build_gaussian(clean, root=None, seed: int = 0, chunk_size: int = CHUNK) -> list[EvalSet]:
    """As many Gaussian-noise images as the clean test set, of its shape and normalisation."""
    return _build_noise("gaussian", clean, seed, chunk_size)


@eval_set("uniform", kind="ood", layout=GENERATED,
          description="OOD: i.i.d. uniform noise images on [0, 1]",
          paper="Hendrycks, Mazeika & Dietterich, ICLR 2019 (Outlier Exposure)")
def build_uniform(clean, root=None, seed: int = 0, chunk_size: int = CHUNK) -> list[EvalSet]:
    """As many uniform-noise images as the clean test set, of its shape and normalisation."""
    return _build_noise("uniform", clean, seed, chunk_size)


def _invert(unit: torch.Tensor, chunk: int) -> torch.Tensor:
    return 1.0 - unit


@eval_set("inverted", kind="ood", layout=GENERATED,
          description="OOD: the clean test images inverted (1 - x in [0, 1]); for digit-like data")
def build_inverted(clean, root=None, seed: int = 0, chunk_size: int = CHUNK) -> list[EvalSet]:
    """1 - x of every clean test image (digits are in [0, 1]: ink becomes background)."""
    require_images("inverted", clean)
    opener = partial(CleanTransformed, clean.test, _invert, chunk_size, OOD_LABEL)
    return [_ood_set("inverted", opener, chunk_size)]
