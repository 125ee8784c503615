"""Decode once, keep on the device, crop and flip there: the data path of image datasets that fit
in memory (digits, CIFAR, Tiny-ImageNet: 100,000 x 64 x 64 x 3 bytes = 1.2 GB).

A DataLoader decodes every JPEG and crops it in a CPU worker at every epoch; on a GPU that trains
a ResNet-50 on 64x64 images at thousands of images per second, those workers are the bottleneck.
Here each split's images are decoded once to uint8 (N, H, W, 3) (JPEG folders: one cache file per
folder under `calbench.native.cache_dir()/images`, keyed by the file names, sizes and mtimes and
the deterministic part of the transform, written atomically), moved to the device with the crop's
zero padding applied, and every batch is cut out with one gather that also applies the flip.

Bit-equal to the DataLoader path, not just the same distribution (tests/data/test_device_resident.py):
the crop offsets and flips are drawn from the generators the DataLoader path draws from, in the same
order (torchvision's RandomCrop draws randint(0, H_pad - h + 1), randint(0, W_pad - w + 1), then
RandomHorizontalFlip draws rand(1) < p, per sample): without workers, the process's global torch
generator, after the one int64 `random_()` each DataLoader iterator draws for its base seed; with
n workers, batch k comes from worker k % n, whose generator is seeded with base seed + worker id.
The uint8 pixels are therefore the ones PIL would have produced, and they are normalised with the
same float32 operations as `ToNormalisedTensor`. So the switch does not change results and is not
part of the run id; the draws run on the CPU in one vectorised call per batch when that call is
verified (once per process) to reproduce the per-sample calls, else sample by sample.

Supported train transforms: Compose([Resize/CenterCrop..., RandomCrop(size, padding, fill 0,
constant), RandomHorizontalFlip(p), ToNormalisedTensor]) with each random step optional; the
deterministic steps are applied once at decode. Anything else (VOC's joint transforms, ImageNet's
RandomResizedCrop and colour jitter, text) keeps its DataLoader; so do images of unequal sizes.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from calbench.data.base import tensors_of
from calbench.errors import ConfigError

MODES = ("auto", "on", "off")
RESIDENT_MAX_BYTES = 8 * 2**30    # auto: at most this many bytes of decoded splits go resident
DEVICE_MEMORY_SHARE = 0.25        # ... and at most this share of the device's memory
CACHE_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """What a supported transform does: deterministic PIL steps at decode (`prefix`), then the
    random crop (size (h, w), padding (left, top, right, bottom)) and flip probability, if any,
    then the normaliser (a ToNormalisedTensor)."""

    prefix: tuple
    crop: tuple[int, int] | None
    padding: tuple[int, int, int, int]
    flip_p: float | None
    normalise: Any


def mode_of(value: Any) -> str:
    """'auto' | 'on' | 'off' (YAML's true/false/on/off are booleans); ConfigError otherwise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in MODES:
        raise ConfigError(f"train.data_on_device: expected auto, on or off, got {value!r}")
    return value


def _padding_of(padding: Any) -> tuple[int, int, int, int] | None:
    """RandomCrop's padding as (left, top, right, bottom), torchvision's reading of an int, a
    1-, 2- (left/right, top/bottom) or 4-sequence; None for anything else."""
    if padding is None:
        return (0, 0, 0, 0)
    if isinstance(padding, int):
        return (padding,) * 4
    if not isinstance(padding, Sequence) or not all(isinstance(p, int) for p in padding):
        return None
    if len(padding) == 1:
        return (padding[0],) * 4
    if len(padding) == 2:
        return (padding[0], padding[1], padding[0], padding[1])
    return tuple(padding) if len(padding) == 4 else None


def _random_crop(step) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
    """(size, padding) of a RandomCrop the device can reproduce (zero fill, no pad_if_needed)."""
    padding = _padding_of(step.padding)
    if padding is None or step.pad_if_needed or step.padding_mode != "constant" or step.fill != 0:
        return None
    return (int(step.size[0]), int(step.size[1])), padding


def plan_of(transform: Callable | None) -> Plan | None:
    """The Plan of a supported transform (module docstring), else None."""
    from torchvision import transforms as T

    from calbench.data.transforms import ToNormalisedTensor

    if not isinstance(transform, T.Compose) or not transform.transforms:
        return None
    *steps, last = transform.transforms
    if not isinstance(last, ToNormalisedTensor):
        return None
    prefix, crop, padding, flip_p = [], None, (0, 0, 0, 0), None
    for step in steps:
        deterministic = isinstance(step, (T.Resize, T.CenterCrop))
        if deterministic and crop is None and flip_p is None:
            prefix.append(step)
        elif isinstance(step, T.RandomCrop) and crop is None and flip_p is None and _random_crop(step):
            crop, padding = _random_crop(step)
        elif isinstance(step, T.RandomHorizontalFlip) and flip_p is None:
            flip_p = float(step.p)
        else:
            return None
    return Plan(tuple(prefix), crop, padding, flip_p, last)


# --- decoding (once; JPEG folders cached on disk) -----------------------------------------------

def _apply_prefix(image, prefix: tuple) -> np.ndarray:
    for step in prefix:
        image = step(image)
    return np.asarray(image, dtype=np.uint8)


def _stack(images: list[np.ndarray]) -> np.ndarray | None:
    """(N, H, W, 3) uint8, or None when the images differ in size (the DataLoader path stays)."""
    if not images:
        return None
    first = images[0].shape
    if len(first) != 3 or first[2] != 3 or any(im.shape != first for im in images):
        return None
    return np.stack(images)


def _folder_listing(folder: Path, suffixes: set[str]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the folder's files with one of `suffixes`, sorted by name."""
    entries = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file() and Path(e.name).suffix.lower() in suffixes:
                st = e.stat()
                entries.append((e.name, st.st_size, st.st_mtime_ns))
    return sorted(entries)


def _cache_path(folder: Path, listing: list, prefix: tuple) -> Path:
    import hashlib

    from calbench.native import cache_dir

    h = hashlib.sha256(f"{CACHE_VERSION}\n{folder.resolve()}\n{[repr(s) for s in prefix]}\n".encode())
    for name, size, mtime in listing:
        h.update(f"{name}\t{size}\t{mtime}\n".encode())
    return cache_dir() / "images" / f"{h.hexdigest()[:32]}.npy"


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` via a temporary file in the same folder and a rename, so a reader
    never sees a half-written cache; a read-only cache folder just means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def decode_folder(folder: Path, suffixes: set[str], prefix: tuple) -> tuple[list[str], np.ndarray | None]:
    """(sorted file names, their decoded images (N, H, W, 3) uint8 or None): from the cache when
    it holds this exact listing and prefix, else decoded with PIL (as ImageList does) and cached."""
    from calbench.data.image_folder import load_rgb

    listing = _folder_listing(folder, suffixes)
    names = [name for name, _, _ in listing]
    path = _cache_path(folder, listing, prefix)
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == len(names) and cached.dtype == np.uint8:
                return names, cached
        except (OSError, ValueError):
            pass
    images = _stack([_apply_prefix(load_rgb(folder / n), prefix) for n in names])
    if images is not None:
        _save_atomically(path, images)
    return names, images


def _decode_job(args):
    return decode_folder(*args)


def decode_paths(paths: Sequence[str], prefix: tuple, workers: int = 0) -> np.ndarray | None:
    """The decoded images of `paths`, in order, assembled from per-folder caches (decoded by up to
    `workers` forked processes, one folder each); None when sizes differ or a file is missing."""
    folders: dict[Path, list[tuple[int, str]]] = {}
    for i, p in enumerate(paths):
        folders.setdefault(Path(p).parent, []).append((i, Path(p).name))
    jobs = [(f, {Path(n).suffix.lower() for _, n in items}, prefix) for f, items in folders.items()]
    results = _run_jobs(jobs, workers)
    out = None
    for (folder, items), (names, images) in zip(folders.items(), results):
        row = {n: r for r, n in enumerate(names)}
        if images is None or any(n not in row for _, n in items):
            return None
        if out is None:
            out = np.empty((len(paths),) + images.shape[1:], dtype=np.uint8)
        if images.shape[1:] != out.shape[1:]:
            return None
        out[[i for i, _ in items]] = images[[row[n] for _, n in items]]
    return out


def _run_jobs(jobs: list, workers: int) -> list:
    import multiprocessing

    if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [_decode_job(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_decode_job, jobs))


def decoded_images(ds: Dataset, prefix: tuple, workers: int = 0) -> np.ndarray | None:
    """uint8 (N, H, W, 3) of an ArrayImages (in memory already) or ImageList (decoded once), with
    the deterministic prefix applied; None for any other dataset."""
    from PIL import Image

    from calbench.data.image_folder import ArrayImages, ImageList

    if isinstance(ds, ArrayImages):
        images = np.asarray(ds.images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            return None
        return images if not prefix else _stack([_apply_prefix(Image.fromarray(im), prefix) for im in images])
    if isinstance(ds, ImageList):
        return decode_paths(ds.paths, prefix, workers)
    return None


# --- the DataLoader path's random draws ------------------------------------------------------------

@dataclass(frozen=True)
class Draws:
    """Per-sample draws of the train transform: crop offsets in [0, rows) x [0, cols) (none when
    both are 1, as torchvision draws none then) and a flip with probability p (None: no flip)."""

    rows: int
    cols: int
    flip_p: float | None

    @property
    def crops(self) -> bool:
        return not (self.rows == 1 and self.cols == 1)

    def per_sample(self, n: int, gen: torch.Generator | None) -> torch.Tensor:
        """(3, n) int64 (top, left, flip): exactly torchvision's calls, sample by sample."""
        out = torch.zeros(3, n, dtype=torch.int64)
        for i in range(n):
            if self.crops:
                out[0, i] = torch.randint(0, self.rows, size=(1,), generator=gen).item()
                out[1, i] = torch.randint(0, self.cols, size=(1,), generator=gen).item()
            if self.flip_p is not None:
                out[2, i] = int(bool(torch.rand(1, generator=gen) < self.flip_p))
        return out

    def vectorised(self, n: int, gen: torch.Generator | None) -> torch.Tensor:
        """The same draws in one call: each per-sample call consumes one 32-bit word w and yields
        w % range (randint) or (w % 2^24) / 2^24 (rand), so one randint(0, M) with M a multiple of
        every range gives each of them by a modulo. Only used when `vector_ok` verified it."""
        per = 2 * self.crops + (self.flip_p is not None)
        out = torch.zeros(3, n, dtype=torch.int64)
        if per == 0 or n == 0:
            return out
        words = torch.randint(0, self.modulus, (per * n,), generator=gen).view(n, per)
        if self.crops:
            out[0], out[1] = words[:, 0] % self.rows, words[:, 1] % self.cols
        if self.flip_p is not None:
            out[2] = ((words[:, -1] % 2**24).to(torch.float32) * 2.0**-24 < self.flip_p).long()
        return out

    @property
    def modulus(self) -> int:
        parts = ([self.rows, self.cols] if self.crops else []) + ([2**24] if self.flip_p is not None else [])
        return math.lcm(*parts) if parts else 1

    def draw(self, n: int, gen: torch.Generator | None) -> torch.Tensor:
        return self.vectorised(n, gen) if vector_ok(self) else self.per_sample(n, gen)


@lru_cache(maxsize=None)
def vector_ok(draws: Draws) -> bool:
    """Whether `draws.vectorised` reproduces `draws.per_sample` in this torch (checked once on a
    seeded probe: torch draws 64 bits per value for large ranges, which breaks the modulo trick)."""
    if draws.modulus >= 2**32:
        return False
    probe = 257
    a = draws.per_sample(probe, torch.Generator().manual_seed(20240601))
    b = draws.vectorised(probe, torch.Generator().manual_seed(20240601))
    return bool(torch.equal(a, b))


def loader_generators(num_workers: int) -> Callable[[int], torch.Generator | None]:
    """batch k -> the generator its transforms draw from on the DataLoader path. Draws the
    iterator's base seed from the global generator, as creating a DataLoader iterator does."""
    base = int(torch.empty((), dtype=torch.int64).random_().item())
    if num_workers <= 0:
        return lambda k: None
    gens = [torch.Generator().manual_seed(base + w) for w in range(num_workers)]
    return lambda k: gens[k % num_workers]


# --- resident splits ---------------------------------------------------------------------------------

class ResidentImages:
    """A split of uint8 images on `device` (padded for the crop); yields (x, y) batches equal to
    the DataLoader path's: float32 (B, 3, h, w) normalised, channels_last when asked, int64 labels."""

    def __init__(self, dataset: Dataset, images: np.ndarray, plan: Plan, device: torch.device,
                 num_workers: int, channels_last: bool):
        self.dataset, self.plan, self.device = dataset, plan, device
        self.num_workers, self.channels_last = num_workers, channels_last
        left, top, right, bottom = plan.padding          # RandomCrop's zero fill, applied once
        store = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.images = torch.nn.functional.pad(store, (0, 0, left, right, top, bottom)) if any(plan.padding) else store
        self.labels = torch.as_tensor(np.asarray(dataset.labels, dtype=np.int64)).to(device)
        height, width = self.images.shape[1:3]
        self.size = plan.crop or (height, width)
        if self.size[0] > height or self.size[1] > width:
            raise ValueError(f"crop {self.size} is larger than the padded images {(height, width)}")
        self.draws = Draws(height - self.size[0] + 1, width - self.size[1] + 1, plan.flip_p)
        norm = plan.normalise
        self.scale, self.shift = norm.scale.to(device), norm.shift.to(device)
        self.steps_h = torch.arange(self.size[0], device=device)
        self.steps_w = torch.arange(self.size[1], device=device)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _cut(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 (B, h, w, 3) crops of rows `idx` at (top, left), mirrored where flip is 1."""
        if not self.draws.crops and self.draws.flip_p is None:
            return self.images[idx]
        rows = params[0][:, None] + self.steps_h
        cols = params[1][:, None] + self.steps_w
        cols = torch.where(params[2][:, None].bool(), cols.flip(1), cols)
        return self.images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]

    def batch(self, positions: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: draws on the CPU (as the DataLoader path), the crop on the device."""
        params = self.draws.draw(len(positions), gen)
        both = torch.cat([positions.reshape(1, -1), params]).to(self.device, non_blocking=True)
        pixels = self._cut(both[0], both[1:])
        x = pixels.permute(0, 3, 1, 2).float().mul_(self.scale).sub_(self.shift)
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        return x, self.labels[both[0]]

    def batches(self, order, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(order, dtype=torch.long)
        generator_of = loader_generators(self.num_workers)
        for k, start in enumerate(range(0, len(order), batch_size)):
            yield self.batch(order[start:start + batch_size], generator_of(k))


class ResidentTensors:
    """An in-memory tensor split (digits) moved to `device` once; batches are indexed there (the
    tensor fast path of the engine draws nothing either, so the streams stay as they were)."""

    def __init__(self, dataset: Dataset, tensors: tuple[torch.Tensor, ...], device: torch.device):
        self.dataset, self.device = dataset, device
        self.tensors = tuple(t.to(device) for t in tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def batches(self, order, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(order, dtype=torch.long).to(self.device)
        x, y = self.tensors[0], self.tensors[1]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def resident_split(ds: Dataset, device: torch.device, num_workers: int = 0, channels_last: bool = False,
                   decode_workers: int = 0):
    """A ResidentTensors / ResidentImages of `ds` on `device`, or None when its data or transform
    is not one the device can reproduce (the caller keeps the DataLoader path then)."""
    tensors = tensors_of(ds)
    if tensors is not None:
        return ResidentTensors(ds, tensors, device)
    plan = plan_of(getattr(ds, "transform", None))
    if plan is None or getattr(ds, "labels", None) is None:
        return None
    images = decoded_images(ds, plan.prefix, decode_workers)
    if images is None:
        return None
    return ResidentImages(ds, images, plan, device, num_workers, channels_last)


def estimated_bytes(datasets: Sequence[Dataset], input_shape: Sequence[int]) -> int:
    """Bytes the splits take resident: tensors as they are, images as uint8 of `input_shape`."""
    total = 0
    for ds in datasets:
        tensors = tensors_of(ds)
        if tensors is not None:
            total += sum(t.element_size() * t.numel() for t in tensors)
        else:
            total += len(ds) * int(np.prod(input_shape))
    return total


def wants_resident(mode: Any, device: torch.device, nbytes: int) -> bool:
    """on: always (where supported); off: never; auto: on CUDA when the splits take at most
    RESIDENT_MAX_BYTES and DEVICE_MEMORY_SHARE of the device's memory (the CPU keeps its loader)."""
    mode = mode_of(mode)
    if mode != "auto":
        return mode == "on"
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return nbytes <= min(RESIDENT_MAX_BYTES, DEVICE_MEMORY_SHARE * total)
