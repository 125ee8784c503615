"""Transforms of the papers: train random crop (+ flip), test resize + centre crop; VOC joint transforms.

A horizontal flip is a label-preserving augmentation for natural images (CIFAR, Tiny-ImageNet,
ImageNet, VOC: the papers use it) but not for digit-like data, where the mirror image of a glyph is
another glyph or none; `small_image_train` therefore takes the switch explicitly (docs/datasets.md).

Image transforms act on PIL images and return normalised float tensors (C, H, W). The VOC joint
transforms act on (image, mask) pairs so crops/flips/scales agree; mask pixels added by padding
are 255 (ignore_index) and masks are resized with nearest-neighbour interpolation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IGNORE_INDEX = 255


class ToNormalisedTensor:
    """PIL RGB image -> float32 (3, H, W) normalised by mean/std: ToTensor + Normalize in one step
    (about 2x faster than the pair, which matters on few-core machines; equal to 1e-6)."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1) / std_t

    def __call__(self, pic) -> torch.Tensor:
        if getattr(pic, "mode", None) != "RGB":
            from torchvision.transforms import functional as F

            return F.normalize(F.to_tensor(pic), self.mean, self.std)
        a = torch.from_numpy(np.array(pic, dtype=np.uint8, copy=True)).permute(2, 0, 1)
        return a.float().mul_(self.scale).sub_(self.shift).contiguous()

    def __repr__(self) -> str:
        return f"ToNormalisedTensor(mean={self.mean}, std={self.std})"


def _to_tensor_normalise(mean, std):
    return [ToNormalisedTensor(mean, std)]


def small_image_train(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, padding: int = 4, *, hflip: bool):
    """Small-image training: RandomCrop(size, padding=4), then a random horizontal flip when hflip.
    hflip has no default on purpose: CIFAR and Tiny-ImageNet train with it (as the papers do), digit-like
    data must not (a mirrored digit is not the same digit), so every caller says which it is."""
    from torchvision import transforms as T

    from calbench.errors import ConfigError

    if not isinstance(hflip, bool):
        raise ConfigError(f"hflip must be true or false, got {hflip!r}")
    steps = [T.RandomCrop(size, padding=padding)] + ([T.RandomHorizontalFlip()] if hflip else [])
    return T.Compose([*steps, *_to_tensor_normalise(mean, std)])


def small_image_test(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """CIFAR / Tiny-ImageNet evaluation: resize + centre crop to `size` (identity at native size)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size), T.CenterCrop(size), *_to_tensor_normalise(mean, std)])


def imagenet_train(size: int = 224, color_jitter: float = 0.4, erase_prob: float = 0.25):
    """ImageNet / ImageNet-LT training (CALS paper, Appendix B): random resized crop, horizontal
    flip, colour jitter and random erasing. The paper gives no strengths; 0.4 jitter and erasing
    with probability 0.25 are the common Swin/DeiT recipe values (0 turns either off)."""
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    if color_jitter > 0:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += _to_tensor_normalise(IMAGENET_MEAN, IMAGENET_STD)
    if erase_prob > 0:
        steps.append(T.RandomErasing(p=erase_prob))
    return T.Compose(steps)


def imagenet_test(size: int = 224, resize: int | None = None):
    """ImageNet evaluation: Resize(size * 256/224) + CenterCrop(size)."""
    from torchvision import transforms as T

    resize = resize or int(round(size * 256 / 224))
    return T.Compose([T.Resize(resize), T.CenterCrop(size),
                      *_to_tensor_normalise(IMAGENET_MEAN, IMAGENET_STD)])


def _image_mask_to_tensors(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.transforms import functional as F

    x = ToNormalisedTensor(IMAGENET_MEAN, IMAGENET_STD)(image)
    return x, torch.from_numpy(np.array(mask, dtype=np.int64))


@dataclass
class JointTrain:
    """VOC training: random scale in [0.5, 2], pad (mask 255) and random crop to `crop`, random flip."""

    crop: int = 512
    scale: tuple[float, float] = (0.5, 2.0)

    def __call__(self, image, mask):
        from PIL import Image
        from torchvision.transforms import functional as F

        s = random.uniform(*self.scale)
        w, h = image.size
        size = [max(1, int(h * s)), max(1, int(w * s))]
        image = F.resize(image, size, interpolation=F.InterpolationMode.BILINEAR)
        mask = F.resize(mask, size, interpolation=F.InterpolationMode.NEAREST)
        ph, pw = max(self.crop - size[0], 0), max(self.crop - size[1], 0)
        if ph or pw:
            image = F.pad(image, [0, 0, pw, ph], fill=0)
            mask = F.pad(mask, [0, 0, pw, ph], fill=IGNORE_INDEX)
        w, h = image.size
        top, left = random.randint(0, h - self.crop), random.randint(0, w - self.crop)
        image = F.crop(image, top, left, self.crop, self.crop)
        mask = F.crop(mask, top, left, self.crop, self.crop)
        if random.random() < 0.5:
            image, mask = image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        return _image_mask_to_tensors(image, mask)


@dataclass
class JointTest:
    """VOC evaluation: resize the shorter side to `crop` and centre crop (mask: nearest neighbour)."""

    crop: int = 512

    def __call__(self, image, mask):
        from torchvision.transforms import functional as F

        image = F.center_crop(F.resize(image, self.crop, interpolation=F.InterpolationMode.BILINEAR), self.crop)
        mask = F.center_crop(F.resize(mask, self.crop, interpolation=F.InterpolationMode.NEAREST), self.crop)
        return _image_mask_to_tensors(image, mask)
