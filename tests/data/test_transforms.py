"""The papers' transforms: ImageNet train augmentation (Appendix B) and small-image crops."""

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from calbench.data import transforms as tf


def test_imagenet_train_has_the_papers_augmentations():
    kinds = [type(t) for t in tf.imagenet_train(32).transforms]
    for k in (T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.RandomErasing, tf.ToNormalisedTensor):
        assert k in kinds
    assert T.ColorJitter not in [type(t) for t in tf.imagenet_train(32, color_jitter=0, erase_prob=0).transforms]
    image = Image.fromarray(np.full((50, 70, 3), 200, dtype=np.uint8))
    torch.manual_seed(0)
    x = tf.imagenet_train(32, color_jitter=0, erase_prob=1.0)(image)
    assert x.shape == (3, 32, 32)
    plain = tf.imagenet_train(32, color_jitter=0, erase_prob=0)(image)
    assert torch.allclose(plain, plain[:, :1, :1].expand_as(plain))  # flat image stays flat
    assert not torch.allclose(x, plain)  # erasing wrote noise into a patch


def test_test_transforms_resize_and_centre_crop():
    image = Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8))
    assert tf.imagenet_test(224)(image).shape == (3, 224, 224)
    assert tf.small_image_test(64)(image).shape == (3, 64, 64)
    assert tf.small_image_train(64, hflip=True)(Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8))).shape == (3, 64, 64)


def test_fused_to_tensor_normalise_equals_torchvision():
    rng = np.random.default_rng(0)
    ref = T.Compose([T.ToTensor(), T.Normalize(tf.IMAGENET_MEAN, tf.IMAGENET_STD)])
    fused = tf.ToNormalisedTensor(tf.IMAGENET_MEAN, tf.IMAGENET_STD)
    for mode, shape in (("RGB", (5, 7, 3)), ("L", (5, 7))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        if mode == "L":
            image = image.convert("RGB")
        out = fused(image)
        assert out.shape == (3, 5, 7) and out.dtype == torch.float32 and out.is_contiguous()
        assert torch.allclose(out, ref(image), atol=1e-5)
