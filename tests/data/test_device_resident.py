"""The device-resident data path (calbench.data.device_resident) against the DataLoader path.

The claim is bit-equality, not equal distributions: the same seeds give the same crops, flips and
normalised floats, batch by batch, with and without DataLoader workers, and the global torch
generator is left where the DataLoader path leaves it (later draws, dropout, are unchanged). So a
whole run trains to the same weights with the switch on or off; tests/gpu repeats this on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calbench.data import create_dataset
from calbench.data import device_resident as resident
from calbench.data import transforms as tf
from calbench.data.image_folder import ArrayImages, ImageList
from calbench.engine.batches import Split
from calbench.errors import ConfigError

CPU = torch.device("cpu")
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_CACHE", str(tmp_path / "cache"))


def _both_paths(ds, num_workers: int, order: torch.Tensor, batch_size: int, seed: int = 5):
    """Batches of the DataLoader path and of the resident path from the same global seed, plus
    the global generator's next draws after each (the streams must be left equal too)."""
    split = Split(ds, num_workers, pin=False)
    res = resident.resident_split(ds, CPU, num_workers)
    assert res is not None, "this dataset should go resident"
    out = []
    for path in (split, res):
        torch.manual_seed(seed)
        batches = list(path.batches(order, batch_size))
        out.append((batches, torch.rand(4)))
    return out


def _assert_equal_batches(loader, device):
    (a, after_a), (b, after_b) = loader, device
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == torch.float32 and xa.shape == xb.shape
        assert torch.equal(xa, xb), f"pixels differ: max |diff| {float((xa - xb).abs().max())}"
        assert torch.equal(ya, yb.to(ya.dtype))
    assert torch.equal(after_a, after_b), "the global generator was left elsewhere"


TRANSFORMS = {
    "crop+flip (the papers')": lambda: tf.small_image_train(32, hflip=True),
    "crop smaller than the image, no flip": lambda: tf.small_image_train(20, padding=2, hflip=False),
    "crop with 41x41 offsets (per-sample draws)": lambda: tf.small_image_train(24, padding=6, hflip=True),
    "test resize + centre crop": lambda: tf.small_image_test(24),
}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_in_memory_images_equal_the_dataloader_path_bit_for_bit(name, num_workers):
    images = RNG.integers(0, 255, (53, 32, 32, 3), dtype=np.uint8)
    ds = ArrayImages(images, RNG.integers(0, 10, 53), TRANSFORMS[name]())
    order = torch.randperm(53, generator=torch.Generator().manual_seed(1))
    _assert_equal_batches(*_both_paths(ds, num_workers, order, batch_size=16))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_tiny_imagenet_jpegs_equal_the_dataloader_path_and_are_cached(tiny_root, tmp_path, num_workers, monkeypatch):
    bundle = create_dataset("tiny-imagenet", tiny_root, seed=0, val_per_class=2)
    order = torch.arange(len(bundle.train)).flip(0)
    _assert_equal_batches(*_both_paths(bundle.train, num_workers, order, batch_size=5))
    _assert_equal_batches(*_both_paths(bundle.test, num_workers, torch.arange(len(bundle.test)), batch_size=4))
    cached = sorted((tmp_path / "cache" / "images").glob("*.npy"))
    assert len(cached) == 4, "one cache file per image folder (3 train classes + val/images)"
    assert not list((tmp_path / "cache" / "images").glob("*.tmp")), "a temporary file was left behind"

    import calbench.data.image_folder as image_folder

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again although it is cached")

    monkeypatch.setattr(image_folder, "load_rgb", no_decoding)
    again = resident.resident_split(bundle.train, CPU, num_workers)
    assert again is not None and again.images.shape[0] == len(bundle.train)


def test_a_changed_file_is_decoded_again(tiny_root, tmp_path):
    bundle = create_dataset("tiny-imagenet", tiny_root, seed=0, val_per_class=2)
    first = resident.resident_split(bundle.test, CPU)
    target = tiny_root / "val" / "images" / sorted(p.name for p in (tiny_root / "val" / "images").iterdir())[0]
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 7, dtype=np.uint8)).save(target, "JPEG", quality=100)
    second = resident.resident_split(bundle.test, CPU)
    row = [str(p) for p in bundle.test.paths].index(str(target))
    assert not torch.equal(first.images[row], second.images[row])
    assert abs(int(second.images[row].float().mean()) - 7) <= 1


def test_a_damaged_cache_file_is_decoded_again_and_replaced(tiny_root, tmp_path):
    bundle = create_dataset("tiny-imagenet", tiny_root, seed=0, val_per_class=2)
    want = resident.resident_split(bundle.test, CPU).images.clone()
    (cached,) = (tmp_path / "cache" / "images").glob("*.npy")
    cached.write_bytes(cached.read_bytes()[:200])          # what a torn write would leave
    assert torch.equal(resident.resident_split(bundle.test, CPU).images, want)
    assert np.load(cached).shape[0] == len(bundle.test)


def test_the_cache_file_equals_decoding_with_pil(tiny_root):
    from calbench.data.image_folder import load_rgb

    bundle = create_dataset("tiny-imagenet", tiny_root, seed=0, val_per_class=2)
    images = resident.decoded_images(bundle.train, ())
    expected = np.stack([np.asarray(load_rgb(p)) for p in bundle.train.paths])
    assert images.dtype == np.uint8 and np.array_equal(images, expected)


def test_unsupported_transforms_and_unequal_sizes_keep_the_dataloader(tmp_path):
    from torchvision import transforms as T

    images = RNG.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    jitter = T.Compose([T.ColorJitter(0.4), tf.ToNormalisedTensor(tf.IMAGENET_MEAN, tf.IMAGENET_STD)])
    assert resident.resident_split(ArrayImages(images, [0, 1, 0, 1], jitter), CPU) is None
    reflect = T.Compose([T.RandomCrop(16, padding=2, padding_mode="reflect"),
                         tf.ToNormalisedTensor(tf.IMAGENET_MEAN, tf.IMAGENET_STD)])
    assert resident.resident_split(ArrayImages(images, [0, 1, 0, 1], reflect), CPU) is None
    from PIL import Image

    for i, size in enumerate([(16, 16), (17, 16)]):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / f"{i}.png")
    mixed = ImageList([tmp_path / "0.png", tmp_path / "1.png"], [0, 1], tf.small_image_train(12, hflip=True))
    assert resident.resident_split(mixed, CPU) is None
    resized = ImageList(mixed.paths, [0, 1], tf.small_image_test(16))   # resized once at decode: equal sizes
    assert resident.resident_split(resized, CPU) is not None


def test_tensor_datasets_go_resident_unchanged():
    bundle = create_dataset("digits", seed=0)
    res = resident.resident_split(bundle.train, CPU)
    order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))
    for (xa, ya), (xb, yb) in zip(Split(bundle.train, 0, False).batches(order, 64), res.batches(order, 64)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("rows,cols,flip", [(9, 9, 0.5), (9, 9, None), (1, 1, 0.5), (3, 5, 0.3), (41, 41, 0.5)])
def test_vectorised_draws_equal_the_per_sample_calls_when_used(rows, cols, flip):
    draws = resident.Draws(rows, cols, flip)
    a = draws.per_sample(300, torch.Generator().manual_seed(3))
    b = draws.draw(300, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    if draws.crops:
        assert a[0].max() == rows - 1 and a[1].max() == cols - 1 and a[0].min() == 0
    if flip is not None:
        assert 0 < a[2].float().mean() < 1


def test_the_papers_draws_are_vectorised_in_this_torch():
    """Tiny-ImageNet / CIFAR (pad 4: 9 x 9 offsets, flip 0.5) take the one-call path: its modulus
    9 * 2^24 is small enough for torch's 32-bit draws (a range of 2^28 or more draws 64 bits in
    torch 2.14, which `vector_ok` detects; the per-sample calls are used then)."""
    assert resident.Draws(9, 9, 0.5).modulus == 9 * 2**24
    assert resident.vector_ok(resident.Draws(9, 9, 0.5))


def test_the_switch_auto_is_off_on_the_cpu_and_bad_values_are_refused():
    assert resident.wants_resident("auto", CPU, 10) is False
    assert resident.wants_resident("on", CPU, 10**12) is True
    assert resident.wants_resident(True, CPU, 10) is True and resident.wants_resident(False, CPU, 10) is False
    with pytest.raises(ConfigError, match="data_on_device"):
        resident.wants_resident("sometimes", CPU, 10)


def test_the_recipe_validates_the_switch_and_keeps_it_out_of_the_run_id():
    from calbench.recipe import expand, parse_recipe
    from calbench.recipe.train import DATA_ON_DEVICE

    assert DATA_ON_DEVICE == resident.MODES

    def spec(train):
        raw = {"name": "r", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"], "methods": ["ce"],
               "train": {"epochs": 1, **train}}
        return expand(parse_recipe(raw))[0]

    ids = {spec({}).run_id, spec({"data_on_device": True}).run_id, spec({"data_on_device": "off"}).run_id}
    assert len(ids) == 1
    assert spec({"data_on_device": True}).train_config.data_on_device == "on"
    with pytest.raises(ConfigError, match="data_on_device.*auto, on or off"):
        spec({"data_on_device": "fast"})


@pytest.mark.slow
@pytest.mark.parametrize("method,num_workers", [("ce", 0), ("gammanet-sece", 2)])
def test_a_whole_run_trains_to_the_same_result_with_the_switch_on_or_off(tmp_path, method, num_workers,
                                                                       monkeypatch):
    """train_run on a CIFAR fixture (crop + flip; gammanet-sece also draws meta batches from the
    train split between steps): identical history, metrics and predictions, on and off."""
    from data.conftest import make_cifar

    from calbench.engine.train import train_run
    from calbench.recipe import expand, parse_recipe

    root = make_cifar(tmp_path / "cifar", "cifar10")
    cut = []
    original = resident.ResidentImages.batch
    monkeypatch.setattr(resident.ResidentImages, "batch", lambda self, *a: cut.append(1) or original(self, *a))
    outs = []
    for mode in ("off", "on"):
        raw = {"name": "r", "seeds": [0], "methods": [method], "backbones": ["small-cnn"], "posthoc": [],
               "datasets": [{"name": "cifar10", "root": str(root), "options": {"val_size": 8}}],
               "train": {"epochs": 2, "batch_size": 8, "num_workers": num_workers, "data_on_device": mode}}
        outs.append(train_run(expand(parse_recipe(raw))[0], tmp_path / mode))
        assert bool(cut) == (mode == "on"), "the switch did not pick the path it names"
    off, on = outs
    strip = lambda h: [{k: v for k, v in line.items() if k != "time_s"} for line in h]  # noqa: E731
    assert strip(off.history) == strip(on.history) and off.metrics == on.metrics
    for key in off.predictions:
        assert np.array_equal(off.predictions[key], on.predictions[key]), key
