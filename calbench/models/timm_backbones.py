"""Any timm model as a Backbone: features = forward_head(forward_features(x), pre_logits=True).

The model is built without a classifier (num_classes=0) and calbench adds Linear(D, K), so
`head(features) == logits` holds for every timm architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from calbench.errors import ConfigError, InputError
from calbench.models.base import Backbone


class TimmBody(nn.Module):
    """timm's trunk plus its pooling (pre-logits) so that the classifier alone maps features to logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def cached_weights(name: str) -> Path:
    """The locally cached pretrained weights file of timm model `name`; InputError if none (no network).

    Looked up in order: the pretrained config's own `file`, torch hub's checkpoints folder (the
    file name of the config's url), the Hugging Face cache (the config's hf_hub_id). The path is
    then handed to timm as `pretrained_cfg_overlay={'file': path}` so timm never goes online.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise InputError(f"backbone '{name}': timm knows no pretrained weights for it")
    file = getattr(cfg, "file", None)
    if file and Path(file).is_file():
        return Path(file)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    url = getattr(cfg, "url", "") or ""
    if url and (hub / Path(url).name).is_file():
        return hub / Path(url).name
    hf_id = getattr(cfg, "hf_hub_id", None)
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo = hf_id.split("@")[0]
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(repo, fname)
                if isinstance(hit, str):
                    return Path(hit)
        except ImportError:
            pass
    raise InputError(f"backbone '{name}': pretrained weights are not in the local cache "
                     f"(torch hub {hub} or the Hugging Face cache) and nothing is downloaded; "
                     f"copy them there or set pretrained: false")


def pretrained_kwargs(name: str, pretrained: bool) -> dict:
    """timm.create_model keyword arguments that load cached weights only (empty when not pretrained)."""
    if not pretrained:
        return {"pretrained": False}
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(cached_weights(name))}}


def timm_backbone(name: str, num_classes: int, task: str = "classification",
                  pretrained: bool = False, in_chans: int = 3, input_size=None,
                  **timm_kwargs) -> Backbone:
    """timm.create_model(name, num_classes=0) as the body (pre-logits features) + a Linear(D, K) head."""
    import timm

    if task != "classification":
        raise ConfigError(f"backbone '{name}': timm models serve classification, not {task}")
    weights = pretrained_kwargs(name, bool(pretrained))
    if input_size is not None and "img_size" not in timm_kwargs and _takes_img_size(name):
        timm_kwargs["img_size"] = tuple(input_size)
    try:
        model = timm.create_model(name, num_classes=0, in_chans=int(in_chans), **weights, **timm_kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone '{name}': bad option ({err})") from None
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return Backbone(TimmBody(model), nn.Linear(dim, num_classes), dim)


def _takes_img_size(name: str) -> bool:
    """Vision transformers fix their input size at construction; CNNs do not take img_size."""
    return any(k in name for k in ("vit", "swin", "deit", "beit", "eva", "cait", "xcit"))
