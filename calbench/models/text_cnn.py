"""Global Pooling CNN for text (docs/datasets.md; used by MbLS/CALS on 20 Newsgroups).

Embedding (frozen GloVe when the dataset supplies `embeddings`) -> three Conv1d(128, k=5) + ReLU
blocks, MaxPool1d(5, stride 1) after the first two -> global max over time -> FC 128 + ReLU
(the features) -> FC K (the head).
"""

from __future__ import annotations

import torch
from torch import nn

from calbench.errors import ConfigError
from calbench.models.base import Backbone


class GPoolBody(nn.Module):
    def __init__(self, embedding: nn.Embedding, channels: int = 128, kernel: int = 5):
        super().__init__()
        self.embedding = embedding
        e, c = embedding.embedding_dim, channels
        self.convs = nn.Sequential(
            nn.Conv1d(e, c, kernel), nn.ReLU(inplace=True), nn.MaxPool1d(5, stride=1),
            nn.Conv1d(c, c, kernel), nn.ReLU(inplace=True), nn.MaxPool1d(5, stride=1),
            nn.Conv1d(c, c, kernel), nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens.long()).transpose(1, 2)  # (N, E, T)
        return self.fc(self.convs(x).amax(dim=2))


def gpool_cnn(num_classes: int, task: str = "text", embeddings: torch.Tensor | None = None,
              vocab_size: int | None = None, padding_idx: int = 0, embed_dim: int = 100,
              freeze_embeddings: bool = True, channels: int = 128) -> Backbone:
    """Global Pooling CNN; `embeddings` (V, E) from the dataset's GloVe file, else learned (V, embed_dim)."""
    if embeddings is not None:
        emb = nn.Embedding.from_pretrained(torch.as_tensor(embeddings, dtype=torch.float32),
                                           freeze=bool(freeze_embeddings), padding_idx=padding_idx)
    elif vocab_size:
        emb = nn.Embedding(int(vocab_size), int(embed_dim), padding_idx=padding_idx)
    else:
        raise ConfigError("backbone 'gpool-cnn' needs a text dataset (vocab_size or embeddings)")
    return Backbone(GPoolBody(emb, int(channels)), nn.Linear(int(channels), num_classes), int(channels))
