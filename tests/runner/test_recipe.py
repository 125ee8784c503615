"""Recipe validation: every malformed recipe is one line naming file and key, exit 2, no training."""

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.errors import ConfigError
from calbench.recipe import expand, load_recipe

GOOD = """
name: tiny
seeds: [0, 1]
datasets: [digits]
backbones: [mlp]
methods:
  - ce
  - cals-alm: {margin: [5, 10]}
train: {epochs: 1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(args):
    return CliRunner().invoke(cli, args)


def test_good_recipe_expands_sweeps_and_seeds(tmp_path):
    specs = expand(load_recipe(write(tmp_path, GOOD)))
    assert [(s.method_label, s.seed) for s in specs] == [
        ("ce", 0), ("ce", 1), ("cals-alm(margin=5)", 0), ("cals-alm(margin=5)", 1),
        ("cals-alm(margin=10)", 0), ("cals-alm(margin=10)", 1)]
    assert len({s.run_id for s in specs}) == 6
    assert specs[2].hparams["margin"] == 5.0 and specs[2].hparams["penalty"] == "phr"


def test_run_id_depends_on_results_relevant_fields_only(tmp_path):
    base = expand(load_recipe(write(tmp_path, GOOD)))
    again = expand(load_recipe(write(tmp_path, GOOD)))
    assert [s.run_id for s in base] == [s.run_id for s in again]
    changed = expand(load_recipe(write(tmp_path, GOOD), sets=["train.epochs=2"]))
    assert not {s.run_id for s in base} & {s.run_id for s in changed}


def test_set_overrides_and_precedence(tmp_path):
    text = GOOD + """
overrides:
  - match: {dataset: digits}
    train: {lr: 0.5, epochs: 3}
  - match: {dataset: digits, method: ce}
    train: {lr: 0.01}
"""
    specs = expand(load_recipe(write(tmp_path, text), sets=["train.batch_size=32"]))
    ce, cals = specs[0], specs[2]
    assert ce.train["lr"] == 0.01 and cals.train["lr"] == 0.5      # most specific wins
    assert ce.train["epochs"] == 3 and ce.train["batch_size"] == 32


def test_environment_variables_expand_in_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_DATA", "/somewhere")
    text = GOOD.replace("datasets: [digits]", "datasets: [{name: cifar10, root: \"${CALBENCH_DATA}/cifar\"}]")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.datasets[0]["root"] == "/somewhere/cifar"


BAD = {
    "bad_yaml": ("name: x\nmethods: [ce\n", ["invalid YAML", "line"]),
    "unknown_top_key": (GOOD + "seed: 3\n", ["seed", "unknown key", "did you mean 'seeds'", "valid: name"]),
    "unknown_method": (GOOD.replace("- ce", "- mbsl"), ["methods[0]", "unknown method 'mbsl'", "did you mean 'mbls'"]),
    "unknown_hparam": (GOOD.replace("margin: [5, 10]", "margn: 5"), ["methods[1].cals-alm", "margn", "did you mean 'margin'"]),
    "list_for_number": (GOOD.replace("train: {epochs: 1}", "train: {epochs: [1, 2]}"), ["train.epochs", "expected an integer"]),
    "unknown_train_key": (GOOD.replace("train: {epochs: 1}", "train: {epoch: 1}"), ["train.epoch", "did you mean 'epochs'"]),
    "unknown_dataset": (GOOD.replace("[digits]", "[digitz]"), ["datasets[0].name", "did you mean 'digits'"]),
    "unknown_backbone": (GOOD.replace("[mlp]", "[not-a-net-at-all]"), ["backbones[0]", "unknown backbone"]),
    "unknown_dataset_key": (GOOD.replace("datasets: [digits]", "datasets: [{name: digits, optoins: {}}]"),
                            ["datasets[0].optoins", "did you mean 'options'"]),
    "unknown_backbone_option": (GOOD.replace("[mlp]", "[{mlp: {hiden: 64}}]"),
                                ["backbones[0].mlp.hiden", "did you mean 'hidden'"]),
    "wrong_hparam_type": (GOOD.replace("margin: [5, 10]", "penalty: 3"), ["penalty", "expected a string"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_recipe_is_one_line_exit_2_and_trains_nothing(tmp_path, case):
    text, needles = BAD[case]
    path = write(tmp_path, text)
    results = tmp_path / "results"
    result = run_cli(["run", str(path), "--results", str(results)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert str(path) in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not results.exists()


def test_missing_dataset_root_names_the_key_and_path(tmp_path):
    text = GOOD.replace("datasets: [digits]", f"datasets: [{{name: cifar10, root: {tmp_path}/nowhere}}]")
    path = write(tmp_path, text)
    results = tmp_path / "results"
    result = run_cli(["run", str(path), "--results", str(results)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "datasets[0].root" in line and "nowhere" in line
    assert not results.exists()
    # the dry run needs no dataset
    assert run_cli(["run", str(path), "--results", str(results), "--dry-run"]).exit_code == 0


def test_unset_environment_variable_in_a_root_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("CALBENCH_DATA", raising=False)
    text = GOOD.replace("datasets: [digits]", "datasets: [{name: cifar10, root: \"${CALBENCH_DATA}/cifar\"}]")
    result = run_cli(["run", str(write(tmp_path, text)), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "environment variable CALBENCH_DATA is not set" in result.output


def test_missing_file_and_bad_set(tmp_path):
    assert "no such recipe" in run_cli(["run", str(tmp_path / "none.yaml")]).output
    path = write(tmp_path, GOOD)
    result = run_cli(["run", str(path), "--set", "train.epochs", "--dry-run"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


@pytest.mark.parametrize("recipe", sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml")))
def test_every_shipped_recipe_passes_dry_run(recipe):
    result = run_cli(["run", str(recipe), "--dry-run", "--results", "/nonexistent-results"])
    assert result.exit_code == 0, result.output
    assert "to do" in result.output


def test_unknown_gpu_is_a_clear_error(tmp_path):
    path = write(tmp_path, GOOD)
    result = run_cli(["run", str(path), "--gpus", "7", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "GPU 7 is not there" in result.output
    result = run_cli(["run", str(path), "--gpus", "0", "--device", "cpu", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "contradict" in result.output
    assert run_cli(["run", str(path), "--jobs", "0", "--results", str(tmp_path / "r")]).exit_code == 2
    assert not (tmp_path / "r").exists()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_set_reaches_into_lists_and_widens_bare_names(tmp_path):
    text = GOOD.replace("datasets: [digits]", "datasets: [digits, digits-lt]")
    recipe = load_recipe(write(tmp_path, text), sets=["datasets.1.options.imbalance_ratio=5",
                                                       "methods.0.ce={}", "methods.1.cals-alm.margin=7"])
    assert recipe.datasets[1]["options"] == {"imbalance_ratio": 5}
    assert [s.method_label for s in expand(recipe)][-1] == "cals-alm(margin=7)"
    with pytest.raises(ConfigError, match=r"'4' is not an index of datasets \(0..1\)"):
        load_recipe(write(tmp_path, text), sets=["datasets.4.root=/x"])


def test_only_filters_by_wildcard_on_label_method_dataset_backbone(tmp_path):
    path = write(tmp_path, GOOD)
    result = run_cli(["run", str(path), "--dry-run", "--only", "cals*", "--results", str(tmp_path / "r")])
    assert result.exit_code == 0 and "4 runs" in result.output and "│ ce " not in result.output
    result = run_cli(["run", str(path), "--dry-run", "--only", "*margin=10*", "--results", str(tmp_path / "r")])
    assert "2 runs" in result.output
    result = run_cli(["run", str(path), "--dry-run", "--only", "nothing*", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "matches no run" in result.output


def test_run_id_ignores_root_and_posthoc_list_but_follows_the_method_version(tmp_path, monkeypatch):
    from calbench.methods import METHODS

    text = GOOD.replace("datasets: [digits]", "datasets: [{name: cifar10, root: /data/a}]")
    base = [s.run_id for s in expand(load_recipe(write(tmp_path, text)))]
    moved = load_recipe(write(tmp_path, text.replace("/data/a", "/elsewhere")), sets=["posthoc=[ts, vs]"])
    assert [s.run_id for s in expand(moved)] == base
    monkeypatch.setattr(METHODS.get("cals-alm"), "version", METHODS.get("cals-alm").version + 1)
    bumped = expand(load_recipe(write(tmp_path, text)))
    assert [s.run_id for s in bumped][:2] == base[:2]                 # ce: unchanged
    assert not set(s.run_id for s in bumped[2:]) & set(base[2:])      # cals-alm: every run changes
    assert bumped[2].identity()["method_version"] == METHODS.get("cals-alm").version


def test_environment_variables_expand_like_expandvars_and_unset_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("CALBENCH_DATA", "/somewhere")
    monkeypatch.delenv("CALBENCH_UNSET", raising=False)
    text = GOOD.replace("datasets: [digits]",
                        "datasets: [{name: cifar10, root: \"$CALBENCH_DATA/${CALBENCH_UNSET}/x\"}]")
    assert load_recipe(write(tmp_path, text)).datasets[0]["root"] == "/somewhere/${CALBENCH_UNSET}/x"
