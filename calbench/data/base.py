"""What every dataset returns: three disjoint splits and what the engine needs to build a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

Task = Literal["classification", "segmentation", "text"]


@dataclass
class DatasetBundle:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    task: Task
    input_shape: tuple[int, ...]          # one sample: (C, H, W) for images, (T,) for text
    split_indices: dict[str, np.ndarray]  # saved beside each run (splits.npz)
    ignore_index: int = -100              # 255 for VOC
    backbone_options: dict[str, Any] = field(default_factory=dict)  # e.g. in_chans, embeddings
