"""The backbone contract: logits plus the penultimate features (gammanet-sece needs them).

Every registered backbone is wrapped so that

    logits = model(x)
    logits, features = model(x, return_features=True)
    model.head(features) == logits        # the final classifier (Linear, or 1x1 conv for
                                          # segmentation); features are (N, D) or (N, D, H, W)
    model.feature_dim == D
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int):
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = int(feature_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.forward_features(x)
        logits = self.head(features)
        return (logits, features) if return_features else logits
