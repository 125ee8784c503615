"""Each real layout read through build_eval_sets: the right rows, labels and classes, streaming from
disk; a wrong layout is one InputError line naming the path and the expected layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calbench.errors import CalbenchError, InputError
from calbench.shift import EVAL_SETS, build_eval_sets, check_eval_root

from .conftest import (CLEAN, IMAGENET_WNIDS, N_PER_SEVERITY, TINY_WNIDS, make_cifar, make_cifar_c,
                       make_class_folders, make_image_folder, make_imagenet_c, make_svhn)


def normalised(rows_uint8: np.ndarray, clean) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the clean dataset's normalised tensors, computed independently."""
    mean = torch.tensor(clean.test.transform.transforms[-1].mean).view(1, 3, 1, 1)
    std = torch.tensor(clean.test.transform.transforms[-1].std).view(1, 3, 1, 1)
    return (torch.from_numpy(rows_uint8.copy()).permute(0, 3, 1, 2).float() / 255 - mean) / std


def one_line_layout_error(name: str, call, path) -> str:
    with pytest.raises(InputError) as err:
        call()
    message = str(err.value)
    assert isinstance(err.value, CalbenchError) and "\n" not in message
    assert str(path) in message and f"expected layout: {EVAL_SETS.entry(name).meta['layout']}" in message
    return message


def everything(s):
    xs, ys = zip(*s.batches(batch_size=4))
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- CIFAR-10-C / CIFAR-100-C


@pytest.mark.parametrize("labels_per_severity", [False, True])
def test_cifar10_c_severity_rows_and_labels(tmp_path, labels_per_severity):
    clean = CLEAN["cifar10"](tmp_path)
    root = make_cifar_c(tmp_path / "CIFAR-10-C", labels_per_severity=labels_per_severity)
    sets = build_eval_sets("cifar10-c", clean, tmp_path)  # the parent of CIFAR-10-C works too
    assert [s.id for s in sets[:6]] == [f"shift:cifar10-c:fog:{s}" for s in range(1, 6)] + ["shift:cifar10-c:gaussian_noise:1"]
    array, labels = np.load(root / "fog.npy"), np.load(root / "labels.npy").astype(np.int64)
    n = N_PER_SEVERITY
    x, y = everything(sets[2])  # fog, severity 3
    torch.testing.assert_close(x, normalised(array[2 * n:3 * n], clean), atol=1e-5, rtol=0)
    assert y.tolist() == (labels if labels_per_severity else labels[2 * n:3 * n]).tolist()
    assert isinstance(sets[2].dataset.images, np.memmap)  # streamed from disk, not loaded


def test_cifar_c_wrong_layouts(tmp_path):
    clean = CLEAN["cifar10"](tmp_path)
    root = tmp_path / "c"
    root.mkdir()
    one_line_layout_error("cifar10-c", lambda: check_eval_root("cifar10-c", root), root / "labels.npy")
    make_cifar_c(root)
    one_line_layout_error("cifar10-c", lambda: build_eval_sets("cifar10-c", clean, root, corruptions=["snow"]),
                          root / "snow.npy")
    np.save(root / "fog.npy", np.zeros((10, 32, 32), dtype=np.uint8))
    message = one_line_layout_error("cifar10-c", lambda: build_eval_sets("cifar10-c", clean, root), root / "fog.npy")
    assert "(10, 32, 32)" in message
    (root / "fog.npy").write_text("not numpy")
    one_line_layout_error("cifar10-c", lambda: build_eval_sets("cifar10-c", clean, root), root / "fog.npy")


def test_cifar100_c_labels_beyond_the_clean_classes_are_refused(tmp_path):
    clean = CLEAN["cifar10"](tmp_path)
    root = make_cifar_c(tmp_path / "CIFAR-100-C", classes=100)
    np.save(root / "labels.npy", np.full(5 * N_PER_SEVERITY, 57, dtype=np.uint8))
    message = one_line_layout_error("cifar100-c", lambda: build_eval_sets("cifar100-c", clean, root),
                                    root / "labels.npy")
    assert "0..9" in message


# ---------------------------------------------------------------- ImageNet-C / Tiny-ImageNet-C


def test_imagenet_c_labels_are_clean_wnid_indices(tmp_path):
    clean = CLEAN["imagenet"](tmp_path)
    root = make_imagenet_c(tmp_path / "ImageNet-C", IMAGENET_WNIDS[::-1][:3], per_class=2)  # 3 of 5 classes
    sets = build_eval_sets("imagenet-c", clean, root, corruptions=["fog"], severities=[5])
    assert [s.id for s in sets] == ["shift:imagenet-c:fog:5"]
    ds = sets[0].dataset
    assert [clean.class_names[c] for c in ds.labels] == [p.split("/")[-2] for p in ds.paths]
    assert sorted(set(ds.labels.tolist())) == [2, 3, 4]
    x, _ = everything(sets[0])
    assert x.shape == (6, 3, 32, 32)


def test_tiny_imagenet_c_uses_the_sorted_wnids_when_class_names_are_words(tmp_path):
    clean = CLEAN["tiny-imagenet"](tmp_path)
    assert clean.class_names[0].startswith("word")
    root = make_imagenet_c(tmp_path / "Tiny-ImageNet-C", TINY_WNIDS, size=64)
    ds = build_eval_sets("tiny-imagenet-c", clean, root, corruptions="fog", severities=1)[0].dataset
    assert [TINY_WNIDS[c] for c in ds.labels] == [p.split("/")[-2] for p in ds.paths]


def test_imagenet_c_wrong_layouts(tmp_path):
    clean = CLEAN["imagenet"](tmp_path)
    root = make_imagenet_c(tmp_path / "ImageNet-C", IMAGENET_WNIDS, corruptions=("fog",), severities=(1, 2))
    one_line_layout_error("imagenet-c", lambda: check_eval_root("imagenet-c", root), root / "fog" / "3")
    one_line_layout_error("imagenet-c", lambda: check_eval_root("imagenet-c", root, corruptions=["snow"]),
                          root / "snow")
    make_imagenet_c(root, ("n9x", "n9y"), corruptions=("fog",), severities=(2,))
    sets = build_eval_sets("imagenet-c", clean, root, severities=[1, 2])
    one_line_layout_error("imagenet-c", lambda: sets[1].dataset, root / "fog" / "2")


# ---------------------------------------------------------------- ImageNet-R / -A / -V2


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a"])
def test_imagenet_r_and_a_restrict_to_their_class_subset(tmp_path, name):
    clean = CLEAN["imagenet"](tmp_path)
    root = make_class_folders(tmp_path / name, ("n0e", "n0b", "n0d"))
    (s,) = build_eval_sets(name, clean, root)
    assert s.id == f"shift:{name}" and s.class_subset.tolist() == [1, 3, 4]
    _, y = everything(s)
    wnids = [p.split("/")[-2] for p in s.dataset.paths]
    assert [clean.class_names[s.class_subset[label]] for label in y.tolist()] == wnids
    make_class_folders(root, ("n7q",))
    one_line_layout_error(name, lambda: build_eval_sets(name, clean, root), root / "n7q")


def test_imagenet_v2_folder_names_are_class_indices(tmp_path):
    clean = CLEAN["imagenet"](tmp_path)
    root = make_class_folders(tmp_path / "v2", (4, 0, 2), suffix=".jpeg")
    (s,) = build_eval_sets("imagenet-v2", clean, root)
    assert s.dataset.labels.tolist() == [int(p.split("/")[-2]) for p in s.dataset.paths] == [0, 0, 2, 2, 4, 4]
    make_class_folders(root, ("n01440764",))
    one_line_layout_error("imagenet-v2", lambda: build_eval_sets("imagenet-v2", clean, root), root / "n01440764")
    bad = make_class_folders(tmp_path / "v2-big", (7,))
    one_line_layout_error("imagenet-v2", lambda: build_eval_sets("imagenet-v2", clean, bad), bad / "7")


# ---------------------------------------------------------------- OOD sources


def test_svhn_images_come_from_the_mat_file(tmp_path):
    from scipy.io import loadmat

    clean = CLEAN["cifar10"](tmp_path)
    root = make_svhn(tmp_path / "svhn")
    (s,) = build_eval_sets("svhn", clean, root)
    x, y = everything(s)
    raw = loadmat(root / "test_32x32.mat")["X"].transpose(3, 0, 1, 2)
    torch.testing.assert_close(x, normalised(raw, clean), atol=1e-5, rtol=0)
    assert s.id == "ood:svhn" and (y == -1).all()
    assert len(build_eval_sets("svhn", clean, root / "test_32x32.mat")[0]) == 7  # the file itself as root


def test_svhn_wrong_files(tmp_path):
    from scipy.io import savemat

    clean = CLEAN["cifar10"](tmp_path)
    root = tmp_path / "svhn"
    root.mkdir()
    one_line_layout_error("svhn", lambda: check_eval_root("svhn", root), root / "test_32x32.mat")
    savemat(root / "test_32x32.mat", {"images": np.zeros((3, 3))})
    one_line_layout_error("svhn", lambda: build_eval_sets("svhn", clean, root)[0].dataset, root / "test_32x32.mat")
    (root / "test_32x32.mat").write_bytes(b"\x00garbage")
    one_line_layout_error("svhn", lambda: build_eval_sets("svhn", clean, root)[0].dataset, root / "test_32x32.mat")


def test_cifar100_as_ood_for_cifar10_reads_the_test_batch(tmp_path):
    import pickle

    clean = CLEAN["cifar10"](tmp_path)
    root = make_cifar(tmp_path / "ood", "cifar100")
    (s,) = build_eval_sets("cifar100", clean, root)
    data = pickle.load(open(root / "cifar-100-python" / "test", "rb"), encoding="bytes")[b"data"]
    x, _ = everything(s)
    torch.testing.assert_close(x, normalised(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), clean),
                               atol=1e-5, rtol=0)


def test_image_folder_reads_every_image_below_root_in_the_clean_format(tmp_path):
    clean = CLEAN["digits"](tmp_path)
    root = make_image_folder(tmp_path / "places")
    (s,) = build_eval_sets("image-folder", clean, root, name="places")
    x, y = everything(s)
    assert s.id == "ood:places" and x.shape == (3, 1, 8, 8) and (y == -1).all()
    assert 0 <= float(x.min()) and float(x.max()) <= 1  # digits' scale: [0, 1], one channel
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    one_line_layout_error("image-folder", lambda: check_eval_root("image-folder", empty), empty)
