"""Two CPU-fast networks for the embedded 8x8 digits: an MLP and a small CNN."""

from __future__ import annotations

from torch import nn

from calbench.models.base import Backbone


def mlp(num_classes: int, task: str = "classification", in_chans: int = 1,
        input_size: tuple[int, int] = (8, 8), hidden: int = 128, depth: int = 2) -> Backbone:
    """Flatten -> `depth` x (Linear(hidden) + ReLU) -> Linear(K); features are the last hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(in_chans) * int(input_size[0]) * int(input_size[1])
    for _ in range(int(depth)):
        layers += [nn.Linear(width, int(hidden)), nn.ReLU(inplace=True)]
        width = int(hidden)
    return Backbone(nn.Sequential(*layers), nn.Linear(width, num_classes), width)


def small_cnn(num_classes: int, task: str = "classification", in_chans: int = 1,
              input_size: tuple[int, int] = (8, 8), width: int = 32) -> Backbone:
    """Conv(w)-ReLU-Conv(2w)-ReLU-MaxPool2-Conv(2w)-ReLU-global average pool -> Linear(K)."""
    w = int(width)
    body = nn.Sequential(
        nn.Conv2d(int(in_chans), w, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Backbone(body, nn.Linear(2 * w, num_classes), 2 * w)
