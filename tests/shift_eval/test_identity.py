"""Evaluation sets and keep_weights are outside the run identity; the recipe key is validated."""

from __future__ import annotations

import pytest

from calbench.errors import ConfigError
from calbench.recipe import expand, parse_recipe

BASE = {"name": "t", "seeds": [0, 1], "backbones": ["mlp"], "methods": ["ce"], "train": {"epochs": 1}}


def _ids(**extra):
    datasets = [{"name": "digits", **extra.pop("dataset", {})}]
    return [s.run_id for s in expand(parse_recipe({**BASE, "datasets": datasets, **extra}))]


def test_evaluation_sets_and_keep_weights_do_not_change_run_ids():
    plain = _ids()
    assert _ids(dataset={"evaluate": {"shift": ["contrast"], "ood": ["uniform"]}}) == plain
    assert _ids(keep_weights=False) == plain


def test_entries_reach_the_spec_with_their_options():
    specs = expand(parse_recipe({**BASE, "keep_weights": False, "datasets": [
        {"name": "digits", "evaluate": {"shift": [{"pixelate": {"severities": [2]}}], "ood": ["inverted"]}}]}))
    assert specs[0].keep_weights is False
    assert [(e["name"], e["kind"], e["options"]) for e in specs[0].evaluate] == [
        ("pixelate", "shift", {"severities": [2]}), ("inverted", "ood", {})]


@pytest.mark.parametrize("evaluate, words", [
    ({"shift": ["gaussian"]}, "unknown shift set 'gaussian'"),          # an OOD set listed as shift
    ({"shfit": ["contrast"]}, "expected a mapping with keys shift, ood"),
    ({"shift": [{"contrast": {"strength": 2}}]}, "unknown option(s) strength"),
    ({"ood": ["svhn"]}, "needs a local root"),
])
def test_bad_entries_are_one_config_error(evaluate, words):
    with pytest.raises(ConfigError) as err:
        parse_recipe({**BASE, "datasets": [{"name": "digits", "evaluate": evaluate}]}, "r.yaml")
    assert words in str(err.value) and "datasets[0].evaluate" in str(err.value) and "\n" not in str(err.value)


def test_keep_weights_must_be_a_boolean():
    with pytest.raises(ConfigError, match="keep_weights"):
        parse_recipe({**BASE, "keep_weights": "yes", "datasets": ["digits"]})
