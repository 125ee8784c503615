"""Generated corruptions on image tensors: the families of Hendrycks & Dietterich (ICLR 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations") at severities 1-5.

Every corruption acts on float images in [0, 1] of shape (N, C, H, W) (before normalisation; apply
the dataset's normalisation afterwards) and returns a tensor of the same shape in [0, 1]. Severity
0 returns the input itself, untouched. The severity tables are the values of the authors' code
(hendrycks/robustness, ImageNet-C/create_c/make_{cifar,tinyimagenet,imagenet}_c.py), one table per
resolution, because the authors tuned each family per image size: `profile_for(h, w)` picks
"cifar" (sides <= 32, also the 8x8 digits), "tiny" (<= 64) or "imagenet" (larger). Randomness
comes only from the torch.Generator passed in; `generator_for(seed, family, severity, chunk)` makes
one per (seed, family, severity, chunk index), so a chunk's images do not depend on which chunks
were computed before it. Formulas and tables: docs/shift.md.

Each family is registered in CORRUPTIONS with `effect` (which measurable property grows with
severity; the tests check it per family) and `stochastic` (whether it draws random numbers).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from calbench.errors import ConfigError
from calbench.registry import Registry

PROFILES = ("cifar", "tiny", "imagenet")
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """fn(x in [0,1] (N,C,H,W), parameter, generator) -> corrupted x; tables: profile -> 5 parameters."""

    fn: Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]
    tables: dict[str, tuple]


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def corruption(name: str, *, effect: str, stochastic: bool, cifar: tuple, tiny: tuple, imagenet: tuple):
    """Register fn(x, parameter, generator) as corruption `name` with its three severity tables."""

    def add(fn):
        tables = {"cifar": tuple(cifar), "tiny": tuple(tiny), "imagenet": tuple(imagenet)}
        if any(len(t) != len(SEVERITIES) for t in tables.values()):
            raise ValueError(f"corruption '{name}': every table needs {len(SEVERITIES)} severities")
        CORRUPTIONS.register(name, Corruption(fn, tables), effect=effect, stochastic=stochastic)
        return fn

    return add


def profile_for(height: int, width: int) -> str:
    """The authors' table for this image size: CIFAR (<= 32 px), Tiny-ImageNet (<= 64), ImageNet."""
    side = max(height, width)
    return "cifar" if side <= 32 else "tiny" if side <= 64 else "imagenet"


def severity_parameter(name: str, severity: int, profile: str) -> Any:
    if profile not in PROFILES:
        raise ConfigError(f"corruption profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if severity not in SEVERITIES:
        raise ConfigError(f"corruption '{name}': severity must be 0..5, got {severity!r}")
    return CORRUPTIONS.get(name).tables[profile][severity - 1]


def generator_for(seed: int, family: str, severity: int, chunk: int) -> torch.Generator:
    """A generator seeded from (seed, family, severity, chunk) by SHA-256: stable across machines
    and Python processes (hash() is salted per process), distinct for every chunk."""
    digest = hashlib.sha256(f"{int(seed)}:{family}:{int(severity)}:{int(chunk)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None,
            profile: str | None = None) -> torch.Tensor:
    """Corruption `name` at `severity` (0 = x itself) of images x in [0, 1], shape (N, C, H, W)."""
    entry = CORRUPTIONS.entry(name)
    if severity == 0:
        return x
    if x.ndim != 4 or not x.is_floating_point():
        raise ConfigError(f"corruption '{name}' needs float images (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    parameter = severity_parameter(name, severity, profile or profile_for(x.shape[-2], x.shape[-1]))
    if generator is None and entry.meta["stochastic"]:
        generator = generator_for(0, name, severity, 0)
    return entry.obj.fn(x, parameter, generator).clamp_(0.0, 1.0)


# ---------------------------------------------------------------- noise


@corruption("gaussian_noise", effect="noise", stochastic=True, cifar=(0.04, 0.06, 0.08, 0.09, 0.10),
            tiny=(0.04, 0.08, 0.12, 0.15, 0.18), imagenet=(0.08, 0.12, 0.18, 0.26, 0.38))
def gaussian_noise(x, c, generator):
    """x + N(0, c^2) per pixel and channel (additive sensor noise)."""
    return x + c * torch.randn(x.shape, generator=generator, dtype=x.dtype)


@corruption("shot_noise", effect="noise", stochastic=True, cifar=(500, 250, 100, 75, 50),
            tiny=(250, 100, 50, 30, 15), imagenet=(60, 25, 12, 5, 3))
def shot_noise(x, c, generator):
    """Poisson(c x) / c: photon counting noise; fewer photons (smaller c) is stronger."""
    return torch.poisson(x.double() * c, generator=generator).div_(c).to(x.dtype)


@corruption("impulse_noise", effect="noise", stochastic=True, cifar=(0.01, 0.02, 0.03, 0.05, 0.07),
            tiny=(0.01, 0.02, 0.05, 0.08, 0.14), imagenet=(0.03, 0.06, 0.09, 0.17, 0.27))
def impulse_noise(x, c, generator):
    """Salt and pepper (scikit-image 's&p', salt_vs_pepper 0.5): each pixel value is replaced with
    probability c, by 1 or 0 with equal chance."""
    flipped = torch.rand(x.shape, generator=generator) < c
    salt = torch.rand(x.shape, generator=generator) < 0.5
    out = x.clone()
    out[flipped & salt] = 1.0
    out[flipped & ~salt] = 0.0
    return out


@corruption("speckle_noise", effect="noise", stochastic=True, cifar=(0.06, 0.1, 0.12, 0.16, 0.2),
            tiny=(0.15, 0.2, 0.25, 0.3, 0.35), imagenet=(0.15, 0.2, 0.35, 0.45, 0.6))
def speckle_noise(x, c, generator):
    """x + x N(0, c^2): multiplicative noise, stronger on bright pixels."""
    return x + x * (c * torch.randn(x.shape, generator=generator, dtype=x.dtype))


# ---------------------------------------------------------------- blur


def filter2d(x: torch.Tensor, kernel: torch.Tensor, border: str) -> torch.Tensor:
    """Correlate every channel with the 2-D kernel (odd sides). border 'reflect' is OpenCV's
    BORDER_REFLECT_101, 'replicate' is scipy's 'nearest'; reflect needs a pad below the image side,
    so a kernel wider than the image falls back to replicate."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    if border == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        border = "replicate"
    padded = F.pad(x, (pw, pw, ph, ph), mode=border)
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, kh, kw)
    return F.conv2d(padded, weight, groups=channels)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


@corruption("gaussian_blur", effect="blur", stochastic=False, cifar=(0.4, 0.6, 0.7, 0.8, 1.0),
            tiny=(0.5, 0.75, 1.0, 1.25, 1.5), imagenet=(1, 2, 3, 4, 6))
def gaussian_blur(x, sigma, generator):
    """Gaussian filter of standard deviation sigma as scikit-image's `gaussian` (scipy): truncated
    at 4 sigma (radius int(4 sigma + 0.5)), border 'nearest'. torchvision's gaussian_blur pads by
    reflection instead, so the borders would differ from the published sets."""
    radius = int(4.0 * sigma + 0.5)
    k = gaussian_kernel1d(float(sigma), radius)
    return filter2d(filter2d(x, k.view(1, -1), "replicate"), k.view(-1, 1), "replicate")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The authors' defocus kernel: the indicator of x^2 + y^2 <= r^2 normalised to sum 1, then
    smoothed by a 3x3 Gaussian of sigma alias_blur (5x5 when r > 8) to anti-alias it. Built on a
    grid just large enough to hold the smoothed disk, so zero padding equals their 17x17 grid."""
    margin = 1 if radius <= 8 else 2
    half = int(math.floor(radius)) + margin
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    g = gaussian_kernel1d(float(alias_blur), margin).view(1, 1, -1)
    smoothed = F.conv2d(disk.view(1, 1, *disk.shape), g.view(1, 1, 1, -1), padding=(0, margin))
    return F.conv2d(smoothed, g.view(1, 1, -1, 1), padding=(margin, 0))[0, 0]


@corruption("defocus_blur", effect="blur", stochastic=False,
            cifar=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
            tiny=((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
            imagenet=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)))
def defocus_blur(x, parameter, generator):
    """Correlation with an anti-aliased disk of radius r (parameter (r, alias sigma)), border
    reflect-101 as OpenCV's filter2D: an out-of-focus lens."""
    radius, alias_blur = parameter
    return filter2d(x, disk_kernel(float(radius), float(alias_blur)), "reflect")


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by `factor` keeping the size: crop ceil(side / factor) pixels around the
    centre, rescale by factor with linear interpolation (corners on corners, as scipy's zoom
    order 1) and trim the centre back to the original side."""
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    zh, zw = int(round(ch * factor)), int(round(cw * factor))
    zoomed = F.interpolate(crop, size=(zh, zw), mode="bilinear", align_corners=True)
    th, tw = (zh - h) // 2, (zw - w) // 2
    return zoomed[..., th:th + h, tw:tw + w]


def zoom_factors(stop: float, step: float) -> np.ndarray:
    """numpy.arange(1, stop, step), the authors' list of zoom factors."""
    return np.arange(1, stop, step)


@corruption("zoom_blur", effect="zoom", stochastic=False,
            cifar=tuple((s, 0.01) for s in (1.06, 1.11, 1.16, 1.21, 1.26)),
            tiny=tuple((s, 0.01) for s in (1.06, 1.11, 1.16, 1.21, 1.26)),
            imagenet=((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)))
def zoom_blur(x, parameter, generator):
    """(x + sum_z clipped_zoom(x, z)) / (n + 1) over the n zoom factors arange(1, stop, step):
    the blur of a camera moving towards the scene. Its strength is the zoom range (the deviation
    from the clean image grows with severity); the high-frequency energy need not fall, since the
    ImageNet table's coarser steps average fewer copies (more weight on the sharp original)."""
    factors = zoom_factors(*parameter)
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, float(z))
    return out / (len(factors) + 1)


# ---------------------------------------------------------------- digital


@corruption("contrast", effect="contrast", stochastic=False, cifar=(0.75, 0.5, 0.4, 0.3, 0.15),
            tiny=(0.4, 0.3, 0.2, 0.1, 0.05), imagenet=(0.4, 0.3, 0.2, 0.1, 0.05))
def contrast(x, c, generator):
    """(x - m) c + m with m the mean of each channel of each image. torchvision's adjust_contrast
    blends towards one grey mean instead of the per-channel means, so it is not used."""
    means = x.mean(dim=(-2, -1), keepdim=True)
    return (x - means) * c + means


@corruption("brightness", effect="brightness", stochastic=False, cifar=(0.05, 0.1, 0.15, 0.2, 0.3),
            tiny=(0.1, 0.2, 0.3, 0.4, 0.5), imagenet=(0.1, 0.2, 0.3, 0.4, 0.5))
def brightness(x, c, generator):
    """HSV value + c (clipped to 1), hue and saturation kept, in closed form: with V = max over the
    channels, every channel of a pixel scales by min(V + c, 1) / V; a black pixel (V = 0, no hue)
    becomes grey min(c, 1). Equals scikit-image's rgb2hsv -> V + c -> hsv2rgb of the authors'."""
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + c).clamp(max=1.0)
    scale = new_value / value.clamp(min=torch.finfo(x.dtype).tiny)
    return torch.where(value > 0, x * scale, new_value.expand_as(x))


@corruption("pixelate", effect="pixelate", stochastic=False, cifar=(0.95, 0.9, 0.85, 0.75, 0.65),
            tiny=(0.9, 0.8, 0.7, 0.6, 0.5), imagenet=(0.6, 0.5, 0.4, 0.3, 0.25))
def pixelate(x, c, generator):
    """Down to int(side c) pixels by area averaging, back up by nearest neighbour: the authors'
    PIL BOX down- and up-sampling (area averaging equals BOX where the ratio is an integer)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest-exact")


@corruption("jpeg_compression", effect="jpeg", stochastic=False, cifar=(80, 65, 58, 50, 40),
            tiny=(65, 58, 50, 40, 25), imagenet=(25, 18, 15, 10, 7))
def jpeg_compression(x, quality, generator):
    """Round to 8 bits, save as JPEG at `quality` with PIL (libjpeg, as the authors did) and decode.
    (torchvision.io's encoder is deprecated from torchvision 0.29.)"""
    images = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    decoded = np.stack([jpeg_round_trip(image, int(quality)) for image in images])
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).to(x.dtype) / 255.0


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, C) uint8 -> JPEG bytes at quality -> (H, W, C) uint8 (C = 1 saved as greyscale)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
