"""The evaluation-set registry and what every evaluation set shares.

An entry of EVAL_SETS (registered with `@eval_set`) is an EvalSetFamily: kind ("shift" or "ood"),
build(clean, root, seed, **options) -> list[EvalSet], an optional cheap layout check, and whether
it needs a root. `clean` is the DatasetBundle of the clean dataset; its `test` split defines the
format every evaluation set is delivered in (same size, channels and normalisation).

An EvalSet opens lazily (listing 50,000 ImageNet-C files or memory-mapping a CIFAR-10-C array
happens only when it is evaluated) and streams: `batches(batch_size)` yields (x, y) tensors, and
`dataset` is a map-style torch Dataset for a DataLoader. Generated sets are computed in fixed
chunks (`chunk_size`, part of their definition: the chunk index seeds the generator), and only one
chunk is held at a time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from calbench.errors import ConfigError, InputError
from calbench.registry import Registry

Kind = Literal["shift", "ood"]
OOD_LABEL = -1  # the label of every OOD sample: no class of the clean label space


@dataclass
class EvalSet:
    """One evaluation set. id is stable ('shift:gaussian_noise:3', 'shift:cifar10-c:fog:2',
    'ood:svhn'); class_subset (sorted clean class indices) means: restrict logits to these columns,
    labels index into the subset (ImageNet-R / -A, as their authors evaluate)."""

    id: str
    kind: Kind
    source: str                       # the EVAL_SETS entry it came from
    family: str                       # corruption or OOD source
    severity: int | None
    opener: Callable[[], Dataset]
    class_subset: np.ndarray | None = None
    chunk_size: int | None = None     # generated sets: the batch size that computes each chunk once
    meta: dict[str, Any] = field(default_factory=dict)
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def dataset(self) -> Dataset:
        """Map-style Dataset of (x, y), opened on first use."""
        if self._dataset is None:
            self._dataset = self.opener()
        return self._dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int = 256, num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) in order. Generated sets are cut from whole chunks; other sets use a DataLoader."""
        ds = self.dataset
        if isinstance(ds, ChunkedDataset):
            yield from ds.batches(batch_size)
            return
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for x, y in loader:
            yield x, torch.as_tensor(y, dtype=torch.int64)


@dataclass(frozen=True)
class EvalSetFamily:
    kind: Kind
    build: Callable[..., list[EvalSet]]
    check: Callable[..., None] | None = None
    needs_root: bool = False

    @property
    def options(self) -> dict[str, Any]:
        params = list(inspect.signature(self.build).parameters.values())
        return {p.name: p.default for p in params if p.name not in ("clean", "root", "seed")}


EVAL_SETS: Registry[EvalSetFamily] = Registry("eval set")


def eval_set(name: str, *, kind: Kind, description: str, layout: str, paper: str = "",
             check: Callable[..., None] | None = None, needs_root: bool = False):
    """Register build(clean, root, seed, **options) -> list[EvalSet] as evaluation set `name`."""
    if kind not in ("shift", "ood"):
        raise ValueError(f"eval set '{name}': kind must be 'shift' or 'ood'")

    def add(build):
        EVAL_SETS.register(name, EvalSetFamily(kind, build, check, needs_root), description=description,
                           paper=paper, kind=kind, layout=layout)
        return build

    return add


def layout_error(name: str, path: Path, problem: str) -> InputError:
    """The one-line error for a wrong layout: the path, what is wrong, the expected layout."""
    layout = EVAL_SETS.entry(name).meta["layout"]
    return InputError(f"eval set '{name}': {path} {problem}; expected layout: {layout}")


# ---------------------------------------------------------------- the clean format


def normalisation_of(clean_test: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of the clean test transform (calbench's ToNormalisedTensor or torchvision's
    Normalize), or None where samples are already images in [0, 1] (digits' TensorDataset)."""
    steps = [getattr(clean_test, "transform", None)]
    while steps:
        step = steps.pop()
        if step is None:
            continue
        if hasattr(step, "mean") and hasattr(step, "std"):
            return tuple(float(v) for v in step.mean), tuple(float(v) for v in step.std)
        steps += list(getattr(step, "transforms", []))
    return None


@dataclass(frozen=True)
class UnitRange:
    """Maps the clean test set's tensors to images in [0, 1] and back (x * std + mean)."""

    mean: torch.Tensor | None
    std: torch.Tensor | None

    @classmethod
    def of(cls, clean_test: Dataset) -> "UnitRange":
        norm = normalisation_of(clean_test)
        if norm is None:
            return cls(None, None)
        return cls(torch.tensor(norm[0]).view(1, -1, 1, 1), torch.tensor(norm[1]).view(1, -1, 1, 1))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        unit = x if self.mean is None else x * self.std + self.mean
        return unit.clamp(0.0, 1.0)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        return unit if self.mean is None else (unit - self.mean) / self.std


def _normalise_step(clean):
    from calbench.data.transforms import ToNormalisedTensor
    from torchvision import transforms as T

    norm = normalisation_of(clean.test)
    return ToNormalisedTensor(*norm) if norm is not None else T.ToTensor()


def native_transform(clean):
    """For sets stored at the clean resolution (CIFAR-10-C, Tiny-ImageNet-C, ImageNet-C: already
    resized and cropped by their authors): resize + centre crop to the clean size (the identity at
    that size) and the clean normalisation."""
    from torchvision import transforms as T

    h, w = clean.input_shape[-2:]
    return T.Compose([T.Resize((h, w)), _normalise_step(clean)])


def foreign_transform(clean):
    """For natural images of another source (ImageNet-R/-A/-V2, SVHN, a folder): the clean test
    transform where it takes PIL images; else (digits' tensors) greyscale if the clean data has one
    channel, resize to the clean size, to [0, 1]."""
    from torchvision import transforms as T

    transform = getattr(clean.test, "transform", None)
    if transform is not None:
        return transform
    channels, h, w = clean.input_shape
    steps = ([T.Grayscale(1)] if channels == 1 else []) + [T.Resize((h, w)), _normalise_step(clean)]
    return T.Compose(steps)


def require_images(name: str, clean) -> None:
    """Generated sets need an image classification dataset: (C, H, W) samples."""
    if clean.task != "classification" or len(clean.input_shape) != 3:
        raise ConfigError(f"eval set '{name}' needs an image classification dataset; "
                          f"'{clean.name}' is {clean.task} with samples {tuple(clean.input_shape)}")


# ---------------------------------------------------------------- chunked streaming


class ChunkedDataset(Dataset):
    """A map-style dataset computed chunk by chunk: make_chunk(k) -> (x, y) of rows
    [k * chunk_size, (k + 1) * chunk_size). Only the last chunk used is kept."""

    def __init__(self, size: int, chunk_size: int):
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        self.size, self.chunk_size = int(size), int(chunk_size)
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def make_chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None or self._cached[0] != k:
            self._cached = (k, *self.make_chunk(k))
        return self._cached[1], self._cached[2]

    def rows(self, k: int) -> range:
        return range(k * self.chunk_size, min(self.size, (k + 1) * self.chunk_size))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        if not -self.size <= i < self.size:
            raise IndexError(i)
        i %= self.size
        x, y = self.chunk(i // self.chunk_size)
        j = i % self.chunk_size
        return x[j], int(y[j])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive batches of batch_size rows (the last may be short), one chunk in memory."""
        xs, ys, held = [], [], 0
        for k in range((self.size + self.chunk_size - 1) // self.chunk_size):
            x, y = self.chunk(k)
            xs.append(x), ys.append(y)
            held += len(y)
            while held >= batch_size:
                bx, by = torch.cat(xs), torch.cat(ys)
                yield bx[:batch_size], by[:batch_size]
                xs, ys, held = [bx[batch_size:]], [by[batch_size:]], held - batch_size
        if held:
            yield torch.cat(xs), torch.cat(ys)


def read_rows(dataset: Dataset, rows: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack dataset[i] for i in rows into (x, y)."""
    samples = [dataset[i] for i in rows]
    x = torch.stack([torch.as_tensor(s[0]) for s in samples])
    y = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.int64)
    return x, y


class CleanTransformed(ChunkedDataset):
    """The clean test set with fn(unit images, chunk index) applied in [0, 1] and the clean
    normalisation re-applied; fn None leaves the clean tensors exactly as they are."""

    def __init__(self, clean_test: Dataset, fn: Callable[[torch.Tensor, int], torch.Tensor] | None,
                 chunk_size: int, label: int | None = None):
        super().__init__(len(clean_test), chunk_size)
        self.clean_test, self.fn, self.label = clean_test, fn, label
        self.unit = UnitRange.of(clean_test)

    def make_chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = read_rows(self.clean_test, self.rows(k))
        if self.fn is not None:
            x = self.unit.from_unit(self.fn(self.unit.to_unit(x), k)).to(x.dtype)
        return x, (y if self.label is None else torch.full_like(y, self.label))


class GeneratedImages(ChunkedDataset):
    """`size` images of `shape` made by fn(count, chunk index) in [0, 1], normalised like the clean
    test set, all labelled OOD_LABEL."""

    def __init__(self, size: int, fn: Callable[[int, int], torch.Tensor], unit: UnitRange, chunk_size: int):
        super().__init__(size, chunk_size)
        self.fn, self.unit = fn, unit

    def make_chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.rows(k))
        return self.unit.from_unit(self.fn(n, k)).float(), torch.full((n,), OOD_LABEL, dtype=torch.int64)


# ---------------------------------------------------------------- building


def eval_set_options(name: str) -> dict[str, Any]:
    """{option: default} that build_eval_sets(name, ...) accepts besides clean, root and seed."""
    return dict(EVAL_SETS.get(name).options)


def check_eval_root(name: str, /, root: str | Path | None, **options: Any) -> None:
    """Cheap checks before anything runs: known options, and a root with the expected layout."""
    family = EVAL_SETS.get(name)
    unknown = sorted(set(options) - set(family.options))
    if unknown:
        raise ConfigError(f"eval set '{name}': unknown option(s) {', '.join(unknown)} "
                          f"(valid: {', '.join(family.options) or 'none'})")
    if not family.needs_root:
        return
    layout = EVAL_SETS.entry(name).meta["layout"]
    if root is None or str(root) == "":
        raise InputError(f"eval set '{name}' needs a local root (nothing is downloaded); expected layout: {layout}")
    path = Path(root).expanduser()
    if not path.exists():
        raise InputError(f"eval set '{name}': root {path} does not exist; expected layout: {layout}")
    if family.check is not None:
        family.check(path, **options)


def build_eval_sets(name: str, /, clean, root: str | Path | None = None, seed: int = 0,
                    **options: Any) -> list[EvalSet]:
    """The evaluation sets of entry `name` for the clean DatasetBundle `clean` (see docs/shift.md)."""
    family = EVAL_SETS.get(name)
    check_eval_root(name, root, **options)
    path = Path(root).expanduser() if root not in (None, "") else None
    return list(family.build(clean, root=path, seed=int(seed), **options))


def parse_severities(name: str, severities, lowest: int = 1) -> tuple[int, ...]:
    """A recipe's severities: an int or a list of ints within lowest..5 (0, the clean images, is
    allowed for generated corruptions only)."""
    values = (severities,) if isinstance(severities, int) else tuple(severities)
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or not lowest <= s <= 5 for s in values):
        raise ConfigError(f"eval set '{name}': severities must be integers within {lowest}..5, got {severities!r}")
    return tuple(sorted(set(values)))
