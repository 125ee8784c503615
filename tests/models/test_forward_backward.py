"""Every registered backbone (plus timm models) does forward + backward on the CPU at its dataset's
input size; logits/features shapes and head(features) == logits are checked."""

from __future__ import annotations

import pytest
import torch

from calbench.models import BACKBONES, create_backbone

# backbone -> (task, one sample's shape, dataset-provided options); sizes are the datasets' own
# except VOC (512x512 crops) where DeepLabV3 runs at 64x64 to keep the suite fast on 2 cores.
TEXT_T = 1000
INPUTS = {
    "mlp": ("classification", (1, 8, 8), {"in_chans": 1, "input_size": (8, 8)}),
    "small-cnn": ("classification", (1, 8, 8), {"in_chans": 1, "input_size": (8, 8)}),
    "resnet50-tiny": ("classification", (3, 64, 64), {"in_chans": 3, "input_size": (64, 64)}),
    **{f"cifar-resnet{d}": ("classification", (3, 32, 32), {"in_chans": 3, "input_size": (32, 32)})
       for d in (20, 32, 56, 110, 18, 50)},
    "deeplabv3": ("segmentation", (3, 64, 64), {"in_chans": 3, "input_size": (64, 64)}),
    "gpool-cnn": ("text", (TEXT_T,), {"vocab_size": 50, "padding_idx": 0,
                                      "embeddings": torch.randn(50, 16)}),
    "resnet18": ("classification", (3, 224, 224), {"in_chans": 3, "input_size": (224, 224)}),  # timm
    "swinv2_tiny_window8_256": ("classification", (3, 64, 64), {"in_chans": 3, "input_size": (64, 64)}),
}


def test_every_registered_backbone_is_exercised():
    assert set(BACKBONES.names()) <= set(INPUTS)


@pytest.mark.parametrize("name", list(INPUTS))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    task, shape, hints = INPUTS[name]
    k = 21 if task == "segmentation" else 5
    model = create_backbone(name, k, task, **hints)
    x = torch.randint(0, 50, (2, *shape)) if task == "text" else torch.randn(2, *shape)
    logits, features = model(x, return_features=True)
    if task == "segmentation":
        assert logits.shape == (2, k, *shape[1:]) and features.shape == (2, model.feature_dim, *shape[1:])
    else:
        assert logits.shape == (2, k) and features.shape == (2, model.feature_dim)
    model.eval()
    with torch.no_grad():
        lo, fe = model(x, return_features=True)
        assert torch.allclose(model.head(fe), lo, atol=1e-5) and torch.allclose(model(x), lo, atol=1e-5)
    model.train()
    logits.float().logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    if name == "gpool-cnn":  # GloVe embeddings are frozen
        assert not model.body.embedding.weight.requires_grad


def test_resnet50_tiny_keeps_resolution_in_the_stem():
    model = create_backbone("resnet50-tiny", 200, "classification")
    stem = model.body.model.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert isinstance(model.body.model.maxpool, torch.nn.Identity) and model.feature_dim == 2048
