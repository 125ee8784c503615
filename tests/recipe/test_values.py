"""Every number and option value of a recipe is checked before anything trains: kinds by their
defaults, finiteness, ranges, seeds. Each bad value is one line naming the key, exit 2."""

import pytest

from .helpers import GOOD, dry_run  # noqa: F401  (dry_run is a fixture)

LT = GOOD.replace("datasets: [digits]", "datasets: [{name: digits-lt, options: {imbalance_ratio: 10}}]")
CIFAR = GOOD.replace("datasets: [digits]", "datasets: [{name: cifar10, root: /nowhere, options: {val_size: 100}}]")


def train(fields: str) -> str:
    return GOOD.replace("train: {epochs: 1}", f"train: {{epochs: 1, {fields}}}")


BAD_VALUES = {
    "lr_nan": (train("lr: .nan"), ["train.lr", "expected a finite number, got nan"]),
    "lr_inf": (train("lr: .inf"), ["train.lr", "finite"]),
    "lr_negative_inf": (train("lr: -.inf"), ["train.lr", "finite"]),
    "lr_zero": (train("lr: 0"), ["train.lr", "must be > 0"]),
    "weight_decay_nan": (train("weight_decay: .NaN"), ["train.weight_decay", "finite"]),
    "negative_epochs": (GOOD.replace("epochs: 1", "epochs: -3"), ["train.epochs", "must be positive, got -3"]),
    "zero_batch_size": (train("batch_size: 0"), ["train.batch_size", "must be positive"]),
    "negative_batch_size": (train("batch_size: -32"), ["train.batch_size", "must be positive"]),
    "momentum_one": (train("momentum: 1.0"), ["train.momentum", "must be in [0, 1)"]),
    "momentum_negative": (train("momentum: -0.1"), ["train.momentum", "must be in [0, 1)"]),
    "meta_fraction_one": (train("meta_fraction: 1"), ["train.meta_fraction", "in [0, 1)"]),
    "world_size_zero": (train("world_size: 0"), ["train.world_size", "must be positive"]),
    "gamma_zero": (train("schedule: {multistep: [1], gamma: 0}"), ["train.schedule.gamma", "> 0"]),
    "negative_milestone": (train("schedule: {multistep: [-1]}"), ["train.schedule.multistep", ">= 0"]),
    "huge_epochs": (train("batch_size: 100000000000000000000000000000"), ["train.batch_size", "64-bit"]),
    "hparam_nan": (GOOD.replace("margin: [5, 10]", "margin: .nan"), ["methods[1].cals-alm", "margin", "finite"]),
    "hparam_inf_in_sweep": (GOOD.replace("margin: [5, 10]", "margin: [5, .inf]"),
                            ["methods[1].cals-alm", "margin[1]", "finite"]),
    "override_lr_nan": (GOOD + "overrides:\n  - match: {method: ce}\n    train: {lr: .nan}\n",
                        ["overrides[0].train.lr", "finite"]),
    "override_hparam_inf": (GOOD + "overrides:\n  - match: {method: cals-alm}\n    method: {margin: .inf}\n",
                            ["overrides[0].method", "finite"]),
    "backbone_option_nan": (GOOD.replace("[mlp]", "[{mlp: {hidden: .nan}}]"), ["backbones[0].mlp.hidden", "finite"]),
    "imbalance_ratio_list": (LT.replace("imbalance_ratio: 10", "imbalance_ratio: [10, 20]"),
                             ["datasets[0].options.imbalance_ratio", "expected a number, got [10, 20]"]),
    "imbalance_ratio_word": (LT.replace("imbalance_ratio: 10", "imbalance_ratio: ten"),
                             ["datasets[0].options.imbalance_ratio", "expected a number, got 'ten'"]),
    "imbalance_ratio_nan": (LT.replace("imbalance_ratio: 10", "imbalance_ratio: .nan"), ["imbalance_ratio", "finite"]),
    "val_size_fraction": (CIFAR.replace("val_size: 100", "val_size: 0.5"),
                          ["datasets[0].options.val_size", "expected an integer, got 0.5"]),
    "val_size_negative": (CIFAR.replace("val_size: 100", "val_size: -5"), ["datasets[0].options.val_size", ">= 0"]),
    "hflip_word": (CIFAR.replace("val_size: 100", "hflip: maybe"), ["datasets[0].options.hflip", "true or false"]),
    "override_dataset_option": (LT + "overrides:\n  - match: {dataset: digits-lt}\n    dataset: {imbalance_ratio: [1]}\n",
                                ["overrides[0].dataset.imbalance_ratio", "expected a number"]),
    "seed_huge": (GOOD.replace("seeds: [0, 1]", "seeds: [0, 120000000000000000000000000000]"),
                  ["seeds[1]", "expected an integer in [0, 4294967295]"]),
    "seed_huge_float": (GOOD.replace("seeds: [0, 1]", "seeds: [1.2e29]"), ["seeds", "expected a list of integers"]),
    "seed_negative": (GOOD.replace("seeds: [0, 1]", "seeds: [-5]"), ["seeds[0]", "got -5"]),
    "seed_fraction": (GOOD.replace("seeds: [0, 1]", "seeds: [0.5]"), ["seeds", "expected a list of integers"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_is_one_line_exit_2_before_training(dry_run, case):
    text, needles = BAD_VALUES[case]
    code, lines, path = dry_run(text)
    assert code == 2 and len(lines) == 1 and path in lines[0], lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_bad_values_through_set_are_refused_too(dry_run):
    for setting, needle in (("train.lr=.nan", "train.lr"), ("seeds=[-1]", "seeds[0]"),
                            ("datasets.0.options.imbalance_ratio=ten", "imbalance_ratio")):
        code, lines, _ = dry_run(LT, "--set", setting)
        assert code == 2 and len(lines) == 1 and needle in lines[0], (setting, lines)


def test_good_values_at_the_edges_still_pass(dry_run):
    text = train("lr: 1e-3, momentum: 0, weight_decay: 0, grad_clip: 0, meta_fraction: 0, num_workers: 0")
    code, lines, _ = dry_run(text.replace("seeds: [0, 1]", "seeds: [0, 4294967295]"))
    assert code == 0, lines
    assert dry_run(LT.replace("imbalance_ratio: 10", "imbalance_ratio: 20.5"))[0] == 0


def test_an_unset_variable_in_a_dataset_option_is_named(dry_run, monkeypatch):
    monkeypatch.delenv("CALBENCH_RATIO", raising=False)
    code, lines, _ = dry_run(LT.replace("imbalance_ratio: 10", "imbalance_ratio: \"${CALBENCH_RATIO}\""))
    assert code == 2 and len(lines) == 1, lines
    assert "options.imbalance_ratio" in lines[0] and "environment variable CALBENCH_RATIO is not set" in lines[0]
    monkeypatch.setenv("CALBENCH_RATIO", "5")
    code, lines, _ = dry_run(LT.replace("imbalance_ratio: 10", "imbalance_ratio: \"${CALBENCH_RATIO}\""))
    assert code == 2 and "expected a number, got '5'" in lines[0]    # expansion gives text, not YAML
