"""Recipe files that would hang, crash or silently mislead the parser: each is one line, exit 2,
in well under a second, before anything runs."""

import time

import pytest

from calbench.recipe.loader import MAX_DEPTH, MAX_NODES, MAX_RECIPE_BYTES, yaml_load
from .helpers import GOOD, dry_run  # noqa: F401  (dry_run is a fixture)


def bomb(levels: int) -> str:
    """Anchors nested `levels` deep, each level aliasing the previous one nine times: 9**levels
    values after expansion from a few hundred bytes."""
    items = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


HOSTILE = {
    "anchor_bomb_in_description": (GOOD + f"description: {bomb(9)}\n", ["invalid YAML", "expands to more than"]),
    "small_anchor_bomb": (GOOD + f"description: {bomb(6)}\n", ["expands to more than"]),
    "anchor_bomb_in_train": (GOOD.replace("{epochs: 1}", f"{{epochs: 1, milestones: {bomb(9)}}}"),
                             ["expands to more than"]),
    "deep_nesting": (GOOD + "description: " + "[" * 20000 + "]" * 20000 + "\n", ["invalid YAML", "nested deeper"]),
    "duplicate_top_key": (GOOD + "seeds: [3]\n", ["invalid YAML", "line 10", "duplicate key 'seeds'",
                                                  "first on line 3"]),
    "duplicate_nested_key": (GOOD.replace("{epochs: 1}", "{epochs: 1, lr: 0.1, epochs: 2}"),
                             ["duplicate key 'epochs'", "line 9"]),
    "self_referencing_alias": (GOOD + "description: &d [*d]\n", ["refers to a value that contains it"]),
    "non_utf8_bytes": (GOOD.encode() + b"description: caf\xe9\n", ["not UTF-8", "0xe9", "line 10"]),
    "too_large": (GOOD + "description: " + "x" * MAX_RECIPE_BYTES + "\n", ["larger than"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_one_line_exit_2_and_fast(dry_run, case):
    content, needles = HOSTILE[case]
    start = time.perf_counter()
    code, lines, path = dry_run(content)
    assert time.perf_counter() - start < 1.0
    assert code == 2 and len(lines) == 1 and path in lines[0], lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_bomb_through_set_is_refused_too(dry_run):
    code, lines, _ = dry_run(GOOD, "--set", f"train.milestones={bomb(9)}")
    assert code == 2 and len(lines) == 1 and "train.milestones" in lines[0], lines


def test_limits_keep_ordinary_anchors_merges_and_yaml_1_2_floats():
    doc = yaml_load("base: &b {lr: 0.1, epochs: 2}\ntrain: {<<: *b, epochs: 3}\nwd: 5e-4\nname: e5\n")
    assert doc == {"base": {"lr": 0.1, "epochs": 2}, "train": {"lr": 0.1, "epochs": 3},
                   "wd": 5e-4, "name": "e5"}
    assert yaml_load("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert len(yaml_load("[" + ", ".join(["1"] * (MAX_NODES - 1)) + "]")) == MAX_NODES - 1
