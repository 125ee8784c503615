"""Generated corruptions: seeded and order-independent, severity 0 is the clean set exactly, every
family grows stronger with severity (one measurable property per effect), and the formulas equal
independent references (scipy's Gaussian filter, colorsys' HSV, block means)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from calbench.shift import CORRUPTIONS, build_eval_sets, corrupt, generator_for, profile_for
from calbench.shift.corruptions import disk_kernel, severity_parameter

from .conftest import CLEAN


def natural_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth gradients, sinusoids and sharp edges with mild texture, within [0.15, 0.85]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    images = []
    for i in range(n):
        phase = torch.rand(channels, 1, 1, generator=g) * 6.28
        wave = torch.sin(2 * np.pi * (2 + i) * xx + phase) * torch.cos(2 * np.pi * 3 * yy)
        edges = ((xx * 4 + i).floor() + (yy * 4).floor()) % 2
        texture = torch.rand(channels, size, size, generator=g)
        images.append(0.5 + 0.15 * wave + 0.15 * (edges - 0.5) + 0.05 * (texture - 0.5) + 0.1 * (xx - 0.5))
    return torch.stack(images).clamp(0.15, 0.85)


def laplacian_energy(x: torch.Tensor) -> float:
    """Mean |discrete Laplacian| over interior pixels: high-frequency content."""
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(lap.abs().mean())


def distinct_values(x: torch.Tensor) -> float:
    """Mean number of distinct values per image and channel: k x k blocks leave at most k^2."""
    return float(np.mean([len(torch.unique(channel)) for image in x for channel in image]))


# effect -> (measure(corrupted, clean), +1 if it grows with severity, -1 if it shrinks)
MEASURES = {
    "noise": (lambda y, x: float(((y - x) ** 2).mean()), +1),
    "blur": (lambda y, x: laplacian_energy(y), -1),
    "contrast": (lambda y, x: float(y.std(dim=(-2, -1)).mean()), -1),
    "brightness": (lambda y, x: float(y.mean()), +1),
    "pixelate": (lambda y, x: distinct_values(y), -1),
    "zoom": (lambda y, x: float(((y - x) ** 2).mean()), +1),
    "jpeg": (lambda y, x: float(((y - x) ** 2).mean()), +1),
}


def test_every_effect_has_a_measure():
    effects = {e.meta["effect"] for e in CORRUPTIONS.entries()}
    assert effects <= set(MEASURES), f"effects without a measure: {effects - set(MEASURES)}"


@pytest.mark.parametrize("size", [32, 64, 96])  # the cifar, tiny and imagenet tables
@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_strength_grows_with_severity(name, size):
    x = natural_images(6, size)
    measure, direction = MEASURES[CORRUPTIONS.entry(name).meta["effect"]]
    values = [measure(corrupt(x, name, s, generator_for(0, name, s, 0)), x) for s in range(6)]
    steps = np.diff(values) * direction
    assert (steps > 0).all(), f"{name} at {size}px ({profile_for(size, size)} table): {values}"


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_severity_zero_is_the_input_and_outputs_stay_images(name):
    x = natural_images(3, 32)
    assert corrupt(x, name, 0) is x
    y = corrupt(x, name, 5, generator_for(0, name, 5, 0))
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= float(y.min()) and float(y.max()) <= 1
    grey = corrupt(natural_images(2, 8, channels=1), name, 3, generator_for(0, name, 3, 0))  # digit-like
    assert grey.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS.names() if CORRUPTIONS.entry(n).meta["stochastic"]])
def test_same_seed_same_images_other_seed_other_images(name):
    x = natural_images(4, 32)
    a = corrupt(x, name, 3, generator_for(7, name, 3, 0))
    assert torch.equal(a, corrupt(x, name, 3, generator_for(7, name, 3, 0)))
    assert not torch.equal(a, corrupt(x, name, 3, generator_for(8, name, 3, 0)))
    assert not torch.equal(a, corrupt(x, name, 3, generator_for(7, name, 3, 1)))  # another chunk


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "pixelate"])
def test_eval_sets_are_identical_whatever_order_the_chunks_are_read_in(name):
    clean = CLEAN["digits"](None)
    (s,) = build_eval_sets(name, clean, seed=3, severities=[4], chunk_size=50)
    forward = torch.cat([x for x, _ in s.batches(batch_size=64)])
    (again,) = build_eval_sets(name, clean, seed=3, severities=[4], chunk_size=50)
    backward = torch.stack([again.dataset[i][0] for i in reversed(range(len(again)))]).flip(0)
    assert torch.equal(forward, backward)
    (other,) = build_eval_sets(name, clean, seed=4, severities=[4], chunk_size=50)
    stochastic = CORRUPTIONS.entry(name).meta["stochastic"]
    assert torch.equal(forward, torch.cat([x for x, _ in other.batches(64)])) != stochastic


@pytest.mark.parametrize("clean_name", ["digits", "cifar10"])
def test_severity_zero_set_equals_the_clean_test_set_exactly(tmp_path, clean_name):
    clean = CLEAN[clean_name](tmp_path)
    (s,) = build_eval_sets("gaussian_noise", clean, severities=[0], chunk_size=4)
    x, y = zip(*s.batches(5))
    expected = [clean.test[i] for i in range(len(clean.test))]
    assert torch.equal(torch.cat(x), torch.stack([e[0] for e in expected]))
    assert torch.cat(y).tolist() == [int(e[1]) for e in expected]


def test_corrupted_cifar_is_renormalised_like_the_clean_set(tmp_path):
    clean = CLEAN["cifar10"](tmp_path)
    (s,) = build_eval_sets("contrast", clean, severities=[5])
    x = torch.cat([b for b, _ in s.batches(100)])
    norm = clean.test.transform.transforms[-1]
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    unit = torch.stack([clean.test[i][0] for i in range(len(clean.test))]) * std + mean
    expected = (corrupt(unit.clamp(0, 1), "contrast", 5) - mean) / std
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- formulas against references


def test_gaussian_blur_equals_scipy_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    x = natural_images(2, 32)
    for severity in (1, 5):
        sigma = severity_parameter("gaussian_blur", severity, "cifar")
        ours = corrupt(x.double(), "gaussian_blur", severity)
        ref = gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_brightness_equals_hsv_value_shift():
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black: no hue
    c = severity_parameter("brightness", 4, "cifar")
    ours = corrupt(x, "brightness", 4)
    for n, i, j in np.ndindex(2, 6, 6):
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        np.testing.assert_allclose(ours[n, :, i, j].numpy(), colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)), atol=1e-12)


def test_contrast_keeps_each_channel_mean_and_scales_deviations():
    x = natural_images(2, 32).double()
    c = severity_parameter("contrast", 2, "cifar")
    y = corrupt(x, "contrast", 2)
    torch.testing.assert_close(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))
    torch.testing.assert_close(y - y.mean(dim=(-2, -1), keepdim=True), c * (x - x.mean(dim=(-2, -1), keepdim=True)))


def test_pixelate_at_an_integer_ratio_is_block_means():
    x = natural_images(2, 64).double()
    assert severity_parameter("pixelate", 5, "tiny") == 0.5
    y = corrupt(x, "pixelate", 5)
    blocks = x.reshape(2, 3, 32, 2, 32, 2).mean(dim=(3, 5))
    torch.testing.assert_close(y, blocks.repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_defocus_kernel_is_a_normalised_disk():
    for radius in (0.3, 1.5, 3, 10):
        k = disk_kernel(radius, 0.5)
        assert abs(float(k.sum()) - 1) < 1e-12 and torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
        assert k.shape[0] == 2 * (int(radius) + (1 if radius <= 8 else 2)) + 1


def test_impulse_noise_replaces_about_the_table_fraction_with_zeros_and_ones():
    x = torch.full((8, 3, 32, 32), 0.5)
    y = corrupt(x, "impulse_noise", 5, generator_for(0, "impulse_noise", 5, 0), profile="imagenet")
    replaced = (y != 0.5).double().mean()
    assert abs(float(replaced) - 0.27) < 0.02 and set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}


def test_the_authors_tables_and_the_resolution_profiles():
    assert CORRUPTIONS.get("gaussian_noise").tables["cifar"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert CORRUPTIONS.get("gaussian_noise").tables["imagenet"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert [profile_for(s, s) for s in (8, 32, 33, 64, 224)] == ["cifar", "cifar", "tiny", "tiny", "imagenet"]
