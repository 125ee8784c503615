"""calbench.validation.check_like_default: the one kind-by-default rule shared by train fields,
method and calibrator hyper-parameters, backbone and dataset options."""

import math

import pytest

from calbench.errors import ConfigError
from calbench.validation import check_finite, check_like_default

ACCEPTED = [
    (True, False, True), (3, 1, 3), (3, 1.0, 3.0), (2.5, 1.0, 2.5), ("phr", "x", "phr"),
    ([8, 8], (1, 1), [8, 8]), ((4,), (), [4]), ([1, "a"], (), [1, "a"]), ([1, 2], None, [1, 2]),
    (None, 1.0, None), ({"a": 1}, None, {"a": 1}),
]
REJECTED = [
    (1, True, "true or false"), ("yes", True, "true or false"), (True, 1, "an integer"),
    (1.5, 1, "an integer"), ([1], 1, "an integer"), ("ten", 1.0, "a number"), (False, 1.0, "a number"),
    (3, "x", "a string"), (5, (1, 1), "a list"), ([1, 2.5], (1, 1), "opt[1]: expected an integer"),
    (math.nan, 1.0, "finite"), (math.inf, 1, "finite"), (-math.inf, None, "finite"),
    ([1.0, math.nan], (), "opt[1]: expected a finite"), ({"k": math.inf}, None, "opt.k: expected a finite"),
    (2**64, 1, "64-bit"),
]


@pytest.mark.parametrize("value, default, expected", ACCEPTED)
def test_values_of_the_default_kind_pass_in_canonical_form(value, default, expected):
    got = check_like_default(value, default, "opt")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, default, needle", REJECTED)
def test_other_kinds_and_non_finite_numbers_name_the_key(value, default, needle):
    with pytest.raises(ConfigError, match="^opt") as err:
        check_like_default(value, default, "opt")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_check_finite_returns_the_value_untouched():
    value = {"a": [1, 2.5, "x"], "b": None}
    assert check_finite(value, "v") is value
