"""ResNets for small images: a 3x3 stride-1 stem and no max-pool (Tiny-ImageNet 64x64, CIFAR 32x32).

'resnet50-tiny' is the CALS paper's Tiny-ImageNet ResNet-50: timm's ResNet-50 with conv1 replaced
by Conv3x3(64, stride 1) and the max-pool removed, so a 64x64 input keeps 8x8 maps at stage 4.
"""

from __future__ import annotations

from torch import nn

from calbench.models.base import Backbone
from calbench.models.timm_backbones import TimmBody


def small_input_resnet(arch: str, num_classes: int, in_chans: int = 3) -> Backbone:
    """timm `arch` (a ResNet) with the 3x3 stride-1 stem and no max-pool, plus Linear(D, K)."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=int(in_chans))
    width = model.conv1.out_channels if isinstance(model.conv1, nn.Conv2d) else 64
    model.conv1 = nn.Conv2d(int(in_chans), width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return Backbone(TimmBody(model), nn.Linear(model.num_features, num_classes), model.num_features)


def resnet50_tiny(num_classes: int, task: str = "classification", in_chans: int = 3) -> Backbone:
    """ResNet-50 for 64x64 Tiny-ImageNet: 3x3 stride-1 stem, no max-pool."""
    return small_input_resnet("resnet50", num_classes, in_chans)
