"""The embedded digits datasets: no arguments, seeded, disjoint, long tail as configured."""

import numpy as np
import pytest
import torch

from calbench.data import DATASETS, check_root, create_dataset, dataset_options
from calbench.errors import ConfigError, UnknownNameError


def labels(ds) -> np.ndarray:
    return ds.tensors[1].numpy()


def test_digits_loads_with_no_arguments_as_60_20_20_tensors():
    b = create_dataset("digits")
    assert (len(b.train), len(b.val), len(b.test)) == (1078, 360, 359)
    x, y = b.train.tensors
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8) == b.input_shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert y.dtype == torch.int64 and set(np.unique(y.numpy())) == set(range(10))
    s = b.split_indices
    assert not (set(s["train"]) & set(s["val"]) or set(s["train"]) & set(s["test"])
                or set(s["val"]) & set(s["test"]))
    assert b.num_classes == 10 and b.task == "classification"


def test_digits_splits_are_seeded():
    a, b, c = create_dataset("digits", seed=1), create_dataset("digits", seed=1), create_dataset("digits", seed=2)
    assert np.array_equal(a.split_indices["val"], b.split_indices["val"])
    assert not np.array_equal(a.split_indices["val"], c.split_indices["val"])
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])


@pytest.mark.parametrize("ratio", [10, 50])
def test_digits_lt_train_follows_the_exponential_profile(ratio):
    b = create_dataset("digits-lt", imbalance_ratio=ratio, seed=3)
    counts = np.bincount(labels(b.train), minlength=10)
    n_max = counts[0]
    expected = [int(n_max * ratio ** (-i / 9)) for i in range(10)]
    assert counts.tolist() == expected
    assert counts[0] / counts[-1] == pytest.approx(ratio, rel=0.15)
    for split in (b.val, b.test):
        assert len(set(np.bincount(labels(split), minlength=10).tolist())) == 1
    s = b.split_indices
    assert not (set(s["train"]) & set(s["val"]) or set(s["train"]) & set(s["test"])
                or set(s["val"]) & set(s["test"]))


def test_options_are_listed_and_unknown_ones_rejected():
    assert dataset_options("digits-lt") == {"imbalance_ratio": 10.0}
    assert dataset_options("digits") == {}
    with pytest.raises(ConfigError, match="imbalance_ratio"):
        create_dataset("digits-lt", imbalance=5)
    with pytest.raises(ConfigError, match=">= 1"):
        create_dataset("digits-lt", imbalance_ratio=0.5)
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        create_dataset("digit")
    check_root("digits", None)


def test_registry_meta_feeds_the_listing():
    for e in DATASETS.entries():
        assert e.meta["task"] in ("classification", "segmentation", "text")
        assert int(e.meta["num_classes"]) > 1 and e.meta["layout"]


def test_split_indices_round_trip_through_npz(tmp_path):
    from calbench.data.splits import load_splits, save_splits

    b = create_dataset("digits-lt", seed=4)
    save_splits(tmp_path / "splits.npz", b.split_indices)
    back = load_splits(tmp_path / "splits.npz")
    assert set(back) == {"train", "val", "test"}
    assert all(np.array_equal(back[k], b.split_indices[k]) for k in back)


def test_arrays_equal_scikit_learns_load_digits_exactly():
    from sklearn.datasets import load_digits

    from calbench.data.digits import load_arrays

    x, y = load_arrays()
    reference = load_digits()
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, (reference.images.astype(np.float32) / 16.0)[:, None, :, :])
    assert np.array_equal(y, reference.target.astype(np.int64))


def test_building_digits_does_not_import_scikit_learn():
    import subprocess
    import sys

    code = ("import sys; from calbench.data import create_dataset; b = create_dataset('digits-lt');"
            "assert len(b.train) > 0; assert 'sklearn' not in sys.modules, 'digits imported scikit-learn'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_missing_scikit_learn_is_one_line(monkeypatch):
    import importlib.util

    from calbench.data import digits
    from calbench.errors import InputError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="install scikit-learn") as err:
        digits.digits_file()
    assert "\n" not in str(err.value)
