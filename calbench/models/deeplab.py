"""DeepLabV3 with a ResNet encoder (torchvision, weights=None) as a segmentation Backbone.

Features are the 256-channel ASPP-head output upsampled (bilinearly) to the input resolution,
(N, 256, H, W); the head is the final 1x1 conv. Bilinear upsampling and a 1x1 conv commute, so
logits equal torchvision's (conv, then upsample) output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from calbench.errors import ConfigError
from calbench.models.base import Backbone

ENCODERS = ("resnet50", "resnet101")


class DeepLabBody(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.encoder(x)["out"])
        return F.interpolate(features, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3(num_classes: int, task: str = "segmentation", encoder: str = "resnet50",
              in_chans: int = 3) -> Backbone:
    """torchvision deeplabv3_<encoder>(weights=None, weights_backbone=None), no aux head."""
    from torchvision.models import segmentation as seg

    if encoder not in ENCODERS:
        raise ConfigError(f"backbone 'deeplabv3': unknown encoder '{encoder}' (valid: {', '.join(ENCODERS)})")
    if int(in_chans) != 3:
        raise ConfigError("backbone 'deeplabv3': in_chans must be 3")
    model = getattr(seg, f"deeplabv3_{encoder}")(weights=None, weights_backbone=None,
                                                 num_classes=num_classes, aux_loss=False)
    classifier = model.classifier  # DeepLabHead: ASPP, conv3x3, BN, ReLU, conv1x1(K)
    body = DeepLabBody(model.backbone, nn.Sequential(*list(classifier.children())[:-1]))
    last = list(classifier.children())[-1]
    return Backbone(body, last, last.in_channels)
