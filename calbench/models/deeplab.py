"""DeepLabV3 with a ResNet encoder as a segmentation Backbone.

The CALS paper (Appendix B) uses DeepLabV3 with a ResNet-34 encoder (ImageNet-pretrained) and a
decoder trained from scratch; torchvision ships DeepLabV3 only on ResNet-50/101, so
encoder='resnet34' (the default, as in the paper) is timm's ResNet-34 at output stride 8
(dilated last stages) under torchvision's DeepLabHead (ASPP rates 12/24/36); 'resnet50' and
'resnet101' are torchvision's deeplabv3_<encoder> as they are.

Features are the 256-channel decoder output before the final 1x1 conv, upsampled bilinearly to the
input resolution, (N, 256, H, W); the head is that 1x1 conv. Bilinear upsampling and a 1x1 conv
commute, so logits equal the usual (conv, then upsample) output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from calbench.errors import ConfigError, InputError
from calbench.models.base import Backbone

TIMM_ENCODERS = ("resnet34",)
TORCHVISION_ENCODERS = ("resnet50", "resnet101")
ENCODERS = TIMM_ENCODERS + TORCHVISION_ENCODERS


class DeepLabBody(nn.Module):
    """encoder -> decoder (all of DeepLabHead but its last 1x1 conv) -> upsample to the input size."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        z = z["out"] if isinstance(z, dict) else z
        return F.interpolate(self.decoder(z), size=x.shape[-2:], mode="bilinear", align_corners=False)


class TimmEncoder(nn.Module):
    """A timm ResNet's feature map at output stride 8 (no pooling, no classifier)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _timm_encoder(encoder: str, pretrained: bool) -> tuple[nn.Module, int]:
    import timm

    from calbench.models.timm_backbones import pretrained_kwargs

    model = timm.create_model(encoder, num_classes=0, global_pool="", output_stride=8,
                              **pretrained_kwargs(encoder, pretrained))
    return TimmEncoder(model), int(model.num_features)


def _torchvision_weights(encoder: str, pretrained: bool):
    """The ImageNet weights enum of torchvision's ResNet encoder if cached locally, else an error."""
    if not pretrained:
        return None
    from torchvision import models

    weights = getattr(models, f"ResNet{encoder[6:]}_Weights").IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise InputError(f"backbone 'deeplabv3': encoder weights {cached} are not in the local cache "
                         f"and nothing is downloaded; copy them there or set pretrained_encoder: false")
    return weights


def deeplabv3(num_classes: int, task: str = "segmentation", encoder: str = "resnet34",
              pretrained_encoder: bool = False, in_chans: int = 3) -> Backbone:
    """DeepLabV3 on a ResNet encoder (default ResNet-34 as in the paper); decoder from scratch."""
    from torchvision.models import segmentation as seg
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    if encoder not in ENCODERS:
        raise ConfigError(f"backbone 'deeplabv3': unknown encoder '{encoder}' (valid: {', '.join(ENCODERS)})")
    if int(in_chans) != 3:
        raise ConfigError("backbone 'deeplabv3': in_chans must be 3")
    if encoder in TIMM_ENCODERS:
        body_encoder, channels = _timm_encoder(encoder, bool(pretrained_encoder))
        head = DeepLabHead(channels, num_classes)
    else:
        model = getattr(seg, f"deeplabv3_{encoder}")(
            weights=None, weights_backbone=_torchvision_weights(encoder, bool(pretrained_encoder)),
            num_classes=num_classes, aux_loss=False)
        body_encoder, head = model.backbone, model.classifier
    layers = list(head.children())  # ASPP, conv3x3, BN, ReLU, conv1x1(K)
    last = layers[-1]
    return Backbone(DeepLabBody(body_encoder, nn.Sequential(*layers[:-1])), last, last.in_channels)
