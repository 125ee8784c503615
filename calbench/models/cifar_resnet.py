"""CIFAR-style ResNets.

'cifar-resnet{20,32,56,110}': He et al. (2016) Sec. 4.2: 3x3 conv(16), three stages of n basic
blocks (16/32/64 channels, stride 2 at stages 2 and 3, 1x1-conv projection shortcuts), global
average pool -> 64 features. 'cifar-resnet{18,50}': the ImageNet ResNets with a 3x3 stride-1 stem
and no max-pool (as used by the focal-loss calibration papers on CIFAR).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from calbench.models.base import Backbone
from calbench.models.resnet_tiny import small_input_resnet


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def cifar_resnet_body(depth: int, in_chans: int = 3) -> nn.Sequential:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    c_in = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(n):
            layers.append(BasicBlock(c_in, width, 2 if stage > 0 and b == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def cifar_resnet(depth: int, num_classes: int, task: str = "classification", in_chans: int = 3) -> Backbone:
    """He et al. (2016) CIFAR ResNet of depth 6n+2; features are the 64-d pooled vector."""
    return Backbone(cifar_resnet_body(depth, int(in_chans)), nn.Linear(64, num_classes), 64)


def cifar_imagenet_resnet(arch: str, num_classes: int, task: str = "classification", in_chans: int = 3) -> Backbone:
    """ImageNet ResNet with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    return small_input_resnet(arch, num_classes, in_chans)


FACTORIES = {
    **{f"cifar-resnet{d}": partial(cifar_resnet, d) for d in (20, 32, 56, 110)},
    "cifar-resnet18": partial(cifar_imagenet_resnet, "resnet18"),
    "cifar-resnet50": partial(cifar_imagenet_resnet, "resnet50"),
}
