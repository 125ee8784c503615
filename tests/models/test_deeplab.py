"""DeepLabV3 encoders: ResNet-34 (paper, timm at output stride 8) and torchvision's ResNet-50."""

import pytest
import torch

from calbench.errors import ConfigError, InputError
from calbench.models import create_backbone


def test_default_encoder_is_the_papers_resnet34_at_output_stride_8():
    model = create_backbone("deeplabv3", 21, "segmentation").eval()
    enc = model.body.encoder.model
    assert type(enc).__name__ == "ResNet" and enc.num_features == 512
    assert len(enc.layer1) == 3 and len(enc.layer3) == 6  # ResNet-34: 3-4-6-3 basic blocks
    with torch.no_grad():
        assert model.body.encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 8, 8)


def test_torchvision_resnet50_encoder():
    model = create_backbone("deeplabv3", 4, "segmentation", encoder="resnet50").eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    assert logits.shape == (1, 4, 40, 48) and feats.shape == (1, 256, 40, 48)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)


def test_bad_encoder_and_uncached_pretrained_encoder_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="valid: resnet34"):
        create_backbone("deeplabv3", 21, "segmentation", encoder="vgg16")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for encoder in ("resnet34", "resnet50"):
        with pytest.raises(InputError, match="local cache"):
            create_backbone("deeplabv3", 21, "segmentation", encoder=encoder, pretrained_encoder=True)
