"""The generic name-keyed registry every kind (methods, datasets, backbones, figures) uses."""

import pytest

from calbench.errors import UnknownNameError
from calbench.registry import Registry, did_you_mean


def make_registry() -> Registry:
    reg = Registry("widget")
    reg.register("resnet18", object(), description="small")
    reg.register("resnet50", object(), description="big")
    reg.register("mlp", object(), description="tiny")
    return reg


def test_names_keep_insertion_order_and_filter_with_wildcards():
    reg = make_registry()
    assert reg.names() == ["resnet18", "resnet50", "mlp"]
    assert reg.names("resnet*") == ["resnet18", "resnet50"]
    assert reg.names("*net5?") == ["resnet50"]


def test_decorator_registration_returns_the_object():
    reg = Registry("widget")

    @reg.register("thing", description="a thing")
    class Thing:
        pass

    assert reg.get("thing") is Thing
    assert reg.entry("thing").description == "a thing"


def test_duplicate_name_is_an_error():
    reg = make_registry()
    with pytest.raises(ValueError, match="mlp"):
        reg.register("mlp", object())


def test_unknown_name_suggests_the_closest_and_lists_valid_ones():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet05")
    message = str(info.value)
    assert "resnet05" in message and "did you mean" in message and "resnet50" in message
    assert "mlp" in message
    assert isinstance(info.value, ValueError)
    assert "\n" not in message


def test_did_you_mean_names_the_closest_or_nothing():
    assert did_you_mean("marign", ["margin", "alpha"]) == " (did you mean 'margin'?)"
    assert did_you_mean("zzzzzz", ["resnet50", "mlp"]) == ""
