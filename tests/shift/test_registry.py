"""Registry-wide: every evaluation set has a fixture in its real layout, builds from it through
build_eval_sets (the code users run), and streams tensors in the clean test set's format."""

from __future__ import annotations

import pkgutil
import sys

import numpy as np
import pytest
import torch

import calbench.shift as shift_package
from calbench.errors import ConfigError, InputError
from calbench.shift import (EVAL_SETS, OOD_LABEL, build_eval_sets, check_eval_root, eval_set_names,
                            eval_set_options)

from .conftest import CLEAN, FIXTURES, fixture_for


def build(name: str, tmp_path, **extra):
    fixture = fixture_for(name)
    clean = CLEAN[fixture.clean](tmp_path)
    root = fixture.make(tmp_path)
    assert (root is None) == (not EVAL_SETS.get(name).needs_root)
    options = {**fixture.options, **extra}
    check_eval_root(name, root, **options)
    return clean, build_eval_sets(name, clean, root, seed=0, **options)


def test_every_eval_set_has_a_fixture_and_every_module_is_imported():
    missing = []
    for name in EVAL_SETS.names():
        try:
            fixture_for(name)
        except KeyError:
            missing.append(name)
    assert not missing, f"eval sets without a fixture in tests/shift/conftest.py: {missing}"
    assert not set(FIXTURES) - set(EVAL_SETS.names()), "fixtures of unregistered eval sets"
    for info in pkgutil.iter_modules(shift_package.__path__):
        assert f"calbench.shift.{info.name}" in sys.modules
    assert set(eval_set_names("shift")) | set(eval_set_names("ood")) == set(EVAL_SETS.names())


@pytest.mark.parametrize("name", EVAL_SETS.names())
def test_every_eval_set_builds_and_streams_in_the_clean_format(tmp_path, name):
    clean, sets = build(name, tmp_path)
    kind = EVAL_SETS.entry(name).meta["kind"]
    assert len(sets) == fixture_for(name).sets
    assert len({s.id for s in sets}) == len(sets)
    for s in sets:
        assert s.kind == kind and s.id.startswith(f"{kind}:") and s.source == name
        xs, ys = zip(*s.batches(batch_size=3))
        x, y = torch.cat(xs), torch.cat(ys)
        assert x.shape == (len(s), *clean.input_shape) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert all(len(b) <= 3 for b in ys) and len(s) > 0
        if kind == "ood":
            assert (y == OOD_LABEL).all()
        else:
            classes = clean.num_classes if s.class_subset is None else len(s.class_subset)
            assert 0 <= int(y.min()) and int(y.max()) < classes
        last, label = s.dataset[len(s) - 1]  # map-style view equals the stream
        assert torch.equal(last, x[-1]) and label == int(y[-1])


@pytest.mark.parametrize("name", EVAL_SETS.names())
def test_unknown_option_is_a_config_error_naming_it(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        check_eval_root(name, None, no_such_option=1)
    assert "no_such_option" not in eval_set_options(name)


@pytest.mark.parametrize("name", [n for n in EVAL_SETS.names() if EVAL_SETS.get(n).needs_root])
def test_missing_root_is_one_line_naming_the_expected_layout(tmp_path, name):
    layout = EVAL_SETS.entry(name).meta["layout"]
    for root in (None, tmp_path / "absent"):
        with pytest.raises(InputError) as err:
            check_eval_root(name, root)
        message = str(err.value)
        assert "\n" not in message and f"expected layout: {layout}" in message
    with pytest.raises(InputError) as err:  # an empty folder
        check_eval_root(name, tmp_path)
    assert str(tmp_path) in str(err.value) and "expected layout" in str(err.value)


def test_generated_sets_refuse_a_non_image_dataset():
    from calbench.data.base import DatasetBundle

    text = DatasetBundle(name="news", train=[], val=[], test=[], num_classes=2, class_names=["a", "b"],
                         task="text", input_shape=(12,), split_indices={})
    for name in ("gaussian_noise", "gaussian", "inverted"):
        with pytest.raises(ConfigError, match="image classification"):
            build_eval_sets(name, text)


def test_severities_are_validated():
    clean = CLEAN["digits"](None)
    with pytest.raises(ConfigError, match="severities"):
        build_eval_sets("contrast", clean, severities=[6])
    assert [s.severity for s in build_eval_sets("contrast", clean, severities=3)] == [3]
    np.testing.assert_array_equal([s.severity for s in build_eval_sets("contrast", clean)], [1, 2, 3, 4, 5])
