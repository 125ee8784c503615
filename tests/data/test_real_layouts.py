"""Each real dataset loaded from a tiny fixture in its on-disk format, through create_dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calbench.data import check_root, create_dataset
from calbench.errors import ConfigError, InputError

from .conftest import make_20news, make_cifar, make_imagenet, make_tiny_imagenet, make_voc


def disjoint(*parts) -> bool:
    sets = [set(map(str, p)) for p in parts]
    return all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])


def test_tiny_imagenet(tiny_root):
    b = create_dataset("tiny-imagenet", tiny_root, seed=1, val_per_class=2)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 6, 6)
    assert b.num_classes == 3 and b.class_names == ["thing 0", "thing 1", "thing 2"]  # words.txt
    x, y = b.train[0]
    assert x.shape == (3, 64, 64) == b.input_shape and x.dtype == torch.float32
    assert sorted(np.bincount(b.val.labels).tolist()) == [2, 2, 2]
    assert sorted(b.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert disjoint(b.train.paths, b.val.paths, b.test.paths)
    grey = [i for i, p in enumerate(b.train.paths + b.val.paths) if p.endswith("_0.JPEG")]
    assert grey and b.val[0][0].shape[0] == 3  # greyscale converted to RGB
    again = create_dataset("tiny-imagenet", tiny_root, seed=1, val_per_class=2)
    assert np.array_equal(again.split_indices["val"], b.split_indices["val"])
    assert not np.array_equal(create_dataset("tiny-imagenet", tiny_root, seed=5, val_per_class=2)
                              .split_indices["val"], b.split_indices["val"])


@pytest.mark.parametrize("kind,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar(tmp_path, kind, classes):
    root = make_cifar(tmp_path, kind)
    b = create_dataset(kind, root, seed=0, val_size=8)
    assert (len(b.train), len(b.val), len(b.test)) == (32, 8, 12)
    assert b.num_classes == classes == len(b.class_names)
    x, y = b.train[3]
    assert x.shape == (3, 32, 32) and 0 <= y < classes
    assert disjoint(b.split_indices["train"], b.split_indices["val"])
    # root may also be the batches folder itself
    inner = next(p for p in root.iterdir())
    assert len(create_dataset(kind, inner, val_size=8).test) == 12


def test_imagenet_and_imagenet_lt(tmp_path):
    root = make_imagenet(tmp_path / "imagenet")
    b = create_dataset("imagenet", root, seed=0, image_size=32)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 3, 12)  # 5 val/class: 1 val, 4 test
    assert b.val[0][0].shape == (3, 32, 32) and b.train[0][0].shape == (3, 32, 32)
    assert disjoint(b.val.paths, b.test.paths) and disjoint(b.train.paths, b.val.paths)
    lt = create_dataset("imagenet-lt", root, list_dir="lists", image_size=32)
    assert (len(lt.train), len(lt.val), len(lt.test)) == (8, 4, 15)
    assert lt.num_classes == 3 and lt.class_names == ["n0a", "n0b", "n0c"]
    assert np.bincount(lt.train.labels).tolist() == [3, 2, 3]
    assert disjoint(lt.train.paths, lt.val.paths, lt.test.paths)
    assert lt.test[14][1] == 2 and lt.test[0][0].shape == (3, 32, 32)


def test_voc_joint_transforms_keep_ignore_255(tmp_path):
    root = make_voc(tmp_path)
    b = create_dataset("voc2012", root, seed=0, crop_size=32)
    assert (len(b.train), len(b.val), len(b.test)) == (8, 2, 4)
    assert b.task == "segmentation" and b.ignore_index == 255 and b.num_classes == 21
    assert disjoint(b.train.ids, b.val.ids, b.test.ids)
    torch.manual_seed(0)
    for ds in (b.train, b.test):
        x, m = ds[0]
        assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.int64
        assert set(torch.unique(m).tolist()) <= {0, 1, 2, 255}
    _, m = b.test[0]
    assert 255 in m.tolist()[0] or (m == 255).any()
    # padding of an upscaled crop larger than the image is marked ignore
    big = create_dataset("voc2012", root, crop_size=200)
    import random
    random.seed(0)
    _, m = big.train[0]
    assert m.shape == (200, 200) and (m == 255).float().mean() > 0.2


def test_20newsgroups_with_glove(tmp_path):
    root = make_20news(tmp_path / "news")
    b = create_dataset("20newsgroups", root, seed=0, glove="glove.txt", max_len=12, val_size=3)
    assert (len(b.train), len(b.val), len(b.test)) == (21, 3, 6)
    assert b.task == "text" and b.num_classes == 3 and b.input_shape == (12,)
    x, y = b.train.tensors
    assert x.shape == (21, 12) and x.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
    assert disjoint(b.split_indices["train"], b.split_indices["val"], b.split_indices["test"])
    emb = b.backbone_options["embeddings"]
    vocab_size = b.backbone_options["vocab_size"]
    assert emb.shape == (vocab_size, 4) and x.max() < vocab_size
    assert (x[:, -1] == 0).any()  # short documents are right-padded with 0
    assert torch.all(emb[0] == 0)
    # headers are stripped: the word only in Subject lines is not in the vocabulary
    from calbench.data.newsgroups import build_vocabulary, read_documents
    docs, _, _ = read_documents(root)
    assert "headerword" not in build_vocabulary(docs, 1000)


BROKEN = {
    "tiny-imagenet": (lambda p: (make_tiny_imagenet(p), (p / "val" / "val_annotations.txt").unlink()),
                      "val_annotations.txt"),
    "cifar10": (lambda p: (make_cifar(p, "cifar10"), (p / "cifar-10-batches-py" / "test_batch").unlink()),
                "test_batch"),
    "cifar100": (lambda p: (make_cifar(p, "cifar100"), (p / "cifar-100-python" / "meta").unlink()), "meta"),
    "imagenet": (lambda p: (p / "train").mkdir(), "train"),
    "imagenet-lt": (lambda p: make_imagenet(p), "ImageNet_LT_train.txt"),
    "voc2012": (lambda p: (make_voc(p), (p / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").unlink()),
                "val.txt"),
    "20newsgroups": (lambda p: (p / "only_one").mkdir(), "newsgroup"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_missing_or_malformed_root_is_one_line_naming_path_and_layout(tmp_path, name):
    for root in (None, tmp_path / "absent"):
        with pytest.raises(InputError) as err:
            create_dataset(name, root)
        msg = str(err.value)
        assert "\n" not in msg and "expected layout" in msg
        if root is not None:
            assert str(root) in msg
    broken = tmp_path / "broken"
    broken.mkdir()
    make, needle = BROKEN[name]
    make(broken)
    with pytest.raises(InputError) as err:
        check_root(name, broken)
    msg = str(err.value)
    assert "\n" not in msg and str(broken) in msg and needle in msg and "expected layout" in msg


def test_malformed_list_and_annotation_lines(tmp_path):
    root = make_imagenet(tmp_path / "im")
    (root / "lists" / "ImageNet_LT_val.txt").write_text("train/n0a/n0a_0.JPEG zero\n")
    with pytest.raises(InputError, match="line 1 is not '<relative path> <int label>'"):
        create_dataset("imagenet-lt", root, list_dir="lists")
    tiny = make_tiny_imagenet(tmp_path / "tiny")
    (tiny / "val" / "val_annotations.txt").write_text("val_0_0.JPEG\tn99\n")
    with pytest.raises(InputError, match="val_annotations.txt line 1"):
        create_dataset("tiny-imagenet", tiny, val_per_class=2)
    news = make_20news(tmp_path / "news")
    with pytest.raises(InputError, match="glove"):
        check_root("20newsgroups", news, glove="missing.txt")
    with pytest.raises(ConfigError, match="valid: val_size"):
        check_root("cifar10", news, val=3)


def test_20newsgroups_bydate_train_and_test_folders_are_merged(tmp_path):
    root = make_20news(tmp_path / "news", per_group=10, bydate=True)
    (root / "glove").mkdir()  # a folder holding a file beside the layout is not a newsgroup
    (root / "glove" / "glove.6B.4d.txt").write_text("space 1 2 3 4\n")
    b = create_dataset("20newsgroups", root, seed=1, glove="glove/glove.6B.4d.txt", max_len=8, val_size=2)
    assert b.class_names == ["alt.atheism", "rec.sport.hockey", "sci.space"]
    assert len(b.train) + len(b.val) + len(b.test) == 30 and len(b.test) == 6 and len(b.val) == 2
    assert np.bincount(torch.cat([b.train.tensors[1], b.val.tensors[1], b.test.tensors[1]])).tolist() == [10, 10, 10]
    emb = b.backbone_options["embeddings"]
    assert emb.shape[1] == 4 and int((emb.abs().sum(1) > 0).sum()) == 1  # only 'space' has a vector
