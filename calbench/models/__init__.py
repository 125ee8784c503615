"""Backbone registry: `create_backbone(name, num_classes, task, **options) -> Backbone`.

calbench registers only what timm/torchvision lack; any other name is looked up in timm. Options
a dataset suggests (DatasetBundle.backbone_options: in_chans, input_size, embeddings, ...) are
passed to a backbone only if it takes them; any other unknown option is a ConfigError.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from calbench.errors import ConfigError, UnknownNameError
from calbench.models.base import Backbone
from calbench.registry import Registry, unknown_name_message

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")

# Keys a dataset may put in DatasetBundle.backbone_options; a backbone that doesn't use one ignores it.
DATASET_HINTS = frozenset({"in_chans", "input_size", "embeddings", "vocab_size", "padding_idx"})


def _timm_names(pattern: str | None = None) -> list[str]:
    import timm

    return list(timm.list_models(pattern)) if pattern else list(timm.list_models())


def is_backbone(name: str) -> bool:
    """A calbench backbone or a timm model name."""
    if name in BACKBONES:
        return True
    import timm

    return bool(timm.is_model(name))


def list_backbones(pattern: str | None = None) -> list[tuple[str, str]]:
    """[(name, source)]: calbench's own (filtered by the wildcard), then with a pattern timm's matches.

    Without a pattern only calbench's own are listed (timm alone has about 1,300 names).
    """
    own = [(n, "calbench") for n in BACKBONES.names(pattern)]
    if pattern is None:
        return own
    taken = {n for n, _ in own}
    return own + [(n, "timm") for n in _timm_names(pattern) if n not in taken]


def _split_options(name: str, factory: Callable[..., Backbone], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(options)
    kept = {k: v for k, v in options.items() if k in params}
    unknown = sorted(k for k in options if k not in params and k not in DATASET_HINTS)
    if unknown:
        valid = [k for k in params if k not in ("num_classes", "task")]
        raise ConfigError(f"backbone '{name}': unknown option(s) {', '.join(unknown)} "
                          f"(valid: {', '.join(valid) or 'none'})")
    return kept


def create_backbone(name: str, num_classes: int, task: str = "classification", **options: Any) -> Backbone:
    """Build backbone `name` for `num_classes` outputs; see `calbench list backbones`."""
    if name in BACKBONES:
        entry = BACKBONES.entry(name)
        tasks = entry.meta.get("tasks", ("classification",))
        if task not in tasks:
            raise ConfigError(f"backbone '{name}' serves {', '.join(tasks)}, not {task}")
        factory = entry.obj
        return factory(num_classes, task, **_split_options(name, factory, options))
    import timm

    if not timm.is_model(name):
        raise UnknownNameError(unknown_name_message("backbone", name, BACKBONES.names())
                               + "; or any timm model name (calbench list backbones --filter)")
    from calbench.models.timm_backbones import timm_backbone

    timm_opts = {k: v for k, v in options.items() if k not in DATASET_HINTS - {"in_chans", "input_size"}}
    return timm_backbone(name, num_classes, task, **timm_opts)


def _register_builtin() -> None:
    from calbench.models import small_nets

    BACKBONES.register("mlp", small_nets.mlp, description="MLP for the embedded 8x8 digits (CPU-fast)",
                       tasks=("classification",))
    BACKBONES.register("small-cnn", small_nets.small_cnn,
                       description="small CNN for the embedded 8x8 digits (CPU-fast)",
                       tasks=("classification",))
    _register_more()


def _register_more() -> None:
    """The papers' backbones that timm lacks as such (docs/datasets.md)."""
    from calbench.models import cifar_resnet, deeplab, resnet_tiny, text_cnn

    BACKBONES.register("resnet50-tiny", resnet_tiny.resnet50_tiny,
                       description="ResNet-50 for 64x64 Tiny-ImageNet: 3x3 stride-1 stem, no max-pool",
                       tasks=("classification",))
    for name, factory in cifar_resnet.FACTORIES.items():
        BACKBONES.register(name, factory, description=f"CIFAR-style {name[6:]} (3x3 stem, 32x32 input)",
                           tasks=("classification",))
    BACKBONES.register("deeplabv3", deeplab.deeplabv3,
                       description="DeepLabV3, ResNet-34 encoder (paper; timm, OS 8) or torchvision resnet50/101",
                       tasks=("segmentation",))
    BACKBONES.register("gpool-cnn", text_cnn.gpool_cnn,
                       description="Global Pooling CNN for text (frozen GloVe embeddings)",
                       tasks=("text",))


_register_builtin()

__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones", "is_backbone"]
