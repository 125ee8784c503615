"""Backbone registry: lookup, listing, option validation, the Backbone contract."""

import pytest
import torch

from calbench.errors import ConfigError, InputError, UnknownNameError
from calbench.models import BACKBONES, create_backbone, is_backbone, list_backbones


def test_listing_has_calbench_own_and_timm_matches():
    own = list_backbones()
    assert ("mlp", "calbench") in own and all(src == "calbench" for _, src in own)
    res = list_backbones("resnet*")
    assert ("resnet50", "timm") in res and all(n.startswith("resnet") for n, _ in res)


def test_is_backbone():
    assert is_backbone("mlp") and is_backbone("resnet18") and is_backbone("swinv2_tiny_window8_256")
    assert not is_backbone("resnet-nope")


def test_unknown_name_and_option_are_user_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'small-cnn'"):
        create_backbone("small_cnn", 10, "classification")
    with pytest.raises(ConfigError, match="hidden"):
        create_backbone("mlp", 10, "classification", hiden=3)
    with pytest.raises(ConfigError, match="segmentation"):
        create_backbone("mlp", 10, "segmentation")


def test_dataset_hints_are_ignored_by_backbones_that_do_not_use_them():
    m = create_backbone("mlp", 3, "classification", in_chans=1, input_size=(8, 8), embeddings=None)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_pretrained_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InputError, match="not in the local cache"):
        create_backbone("resnet18", 10, "classification", pretrained=True)


def test_pretrained_loads_weights_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    import timm
    from pathlib import Path
    from timm.models import get_pretrained_cfg

    reference = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "checkpoints" / Path(get_pretrained_cfg("resnet18").url).name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_backbone("resnet18", 7, "classification", pretrained=True)
    assert torch.equal(model.body.model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.body.model.layer4[1].bn2.weight, reference.layer4[1].bn2.weight)
    assert model.head.out_features == 7
