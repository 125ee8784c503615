"""Registry-wide: every registered dataset has an on-disk fixture in its real layout and builds from it
into three splits that fit the engine; the data package registers every module; flips are switchable."""

from __future__ import annotations

import pkgutil

import numpy as np
import pytest
import torch

import calbench.data as data_package
from calbench.data import DATASETS, create_dataset, dataset_options

from .conftest import FIXTURES


def test_every_registered_dataset_has_an_on_disk_fixture():
    missing = [name for name in DATASETS.names() if name not in FIXTURES]
    assert not missing, f"datasets without a fixture in tests/data/conftest.py FIXTURES: {missing}"
    assert not set(FIXTURES) - set(DATASETS.names()), "fixtures of datasets that are not registered"


def test_every_module_of_the_package_is_imported():
    import sys

    for info in pkgutil.iter_modules(data_package.__path__):
        assert f"calbench.data.{info.name}" in sys.modules
    modules = {DATASETS.get(name).build.__module__ for name in DATASETS.names()}
    assert modules <= set(sys.modules) and len(modules) >= 2


def build(name: str, tmp_path, seed: int = 0, **extra):
    fixture = FIXTURES[name]
    root = fixture.make(tmp_path)
    assert (root is None) == (not DATASETS.get(name).needs_root)
    return create_dataset(name, root, seed=seed, **{**fixture.options, **extra})


def first_sample(split):
    torch.manual_seed(0)
    return split[0]


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_builds_from_its_fixture(tmp_path, name):
    entry = DATASETS.entry(name)
    bundle = build(name, tmp_path, seed=1)
    assert bundle.task == entry.meta["task"]
    assert set(bundle.split_indices) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert len(getattr(bundle, split)) == len(bundle.split_indices[split]) > 0
    # (split indices may index different pools, e.g. ImageNet's val/test index the official val;
    # each dataset's own test checks that its splits are disjoint)
    x, y = first_sample(bundle.train)
    assert tuple(x.shape) == bundle.input_shape or bundle.task == "segmentation"
    assert torch.is_tensor(x) and x.dtype in (torch.float32, torch.int64)
    labels = torch.as_tensor(y)
    valid = labels[labels != bundle.ignore_index]
    assert int(valid.min()) >= 0 and int(valid.max()) < bundle.num_classes
    again = build(name, tmp_path / "again", seed=1)
    assert all(np.array_equal(again.split_indices[k], bundle.split_indices[k]) for k in bundle.split_indices)


def has_flip(transform) -> bool:
    from torchvision import transforms as T

    return any(isinstance(t, T.RandomHorizontalFlip) for t in getattr(transform, "transforms", []))


FLIPPABLE = [name for name in DATASETS.names() if "hflip" in dataset_options(name)]


def test_the_papers_natural_image_datasets_can_switch_the_flip():
    assert {"cifar10", "cifar100", "tiny-imagenet"} <= set(FLIPPABLE)


@pytest.mark.parametrize("name", FLIPPABLE)
def test_hflip_switch(tmp_path, name):
    assert dataset_options(name)["hflip"] is True
    assert has_flip(build(name, tmp_path / "on").train.transform)
    off = build(name, tmp_path / "off", hflip=False)
    assert not has_flip(off.train.transform) and not has_flip(off.val.transform)


def test_small_image_train_says_whether_it_flips():
    from calbench.data import transforms as tf
    from calbench.errors import ConfigError

    with pytest.raises(TypeError):
        tf.small_image_train(32)  # no default: every caller decides
    assert has_flip(tf.small_image_train(32, hflip=True)) and not has_flip(tf.small_image_train(32, hflip=False))
    with pytest.raises(ConfigError, match="hflip"):
        tf.small_image_train(32, hflip="yes")


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if n.startswith("digits")])
def test_digits_train_samples_are_not_augmented(name):
    from calbench.data.digits import load_arrays

    bundle = create_dataset(name, seed=2)
    x, _ = load_arrays()
    assert torch.equal(bundle.train.tensors[0], torch.from_numpy(x[bundle.split_indices["train"]]))
