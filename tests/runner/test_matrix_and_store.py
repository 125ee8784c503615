"""Matrix integrity (no run twice, run ids hash only what the result depends on), value checks of
backbone options and override sweeps, the store's done/atomic rules, and the meta split."""

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.errors import ConfigError, InputError
from calbench.recipe import expand, load_recipe, parse_recipe
from calbench.runner.store import (PREDICTION_KEYS, is_done, predictions_problem, read_metrics, save_npz_atomic,
                                   write_json_atomic)

BASE = """
name: m
seeds: [0]
datasets: [digits]
backbones: [mlp]
methods: [ce, {cals-alm: {margin: 5}}]
train: {epochs: 1}
"""

REJECTED = {
    "method_twice": ("methods=[ce, ce]", "methods[1]: repeats a run"),
    "seed_twice": ("seeds=[0, 0]", "seeds[1]: repeats a run"),
    "sweep_value_twice": ("methods=[{cals-alm: {margin: [5, 5.0]}}]", "methods[0].cals-alm: repeats a run"),
    "dataset_twice": ("datasets=[digits, digits]", "datasets[1]: repeats a run"),
    "override_sweep": ("overrides=[{match: {method: cals-alm}, method: {margin: [5, 10]}}]",
                       "overrides[0].method.margin: a list (sweep) is not allowed"),
    "backbone_option_list": ("backbones=[{mlp: {hidden: [64, 128]}}]",
                             "backbones[0].mlp.hidden: expected an integer, got [64, 128]"),
    "backbone_option_float": ("backbones=[{small-cnn: {width: 8.5}}]",
                              "backbones[0].small-cnn.width: expected an integer"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_matrix_is_one_line_exit_2_before_training(tmp_path, case):
    setting, needle = REJECTED[case]
    path = tmp_path / "m.yaml"
    path.write_text(BASE)
    results = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", str(path), "--results", str(results), "--set", setting])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], result.output
    assert not results.exists()


def test_list_valued_backbone_option_with_a_tuple_default_is_accepted(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE)
    specs = expand(load_recipe(path, sets=["backbones=[{mlp: {input_size: [8, 8], hidden: 32}}]"]))
    assert specs[0].backbone_options == {"input_size": [8, 8], "hidden": 32}


def _ids(**changes):
    raw = {"name": "ids", "seeds": [0], "backbones": ["mlp"], "methods": [{"cals-alm": {"margin": 5}}],
           "datasets": [{"name": "cifar10", "root": "/data/a", "options": {"val_size": 100}}],
           "train": {"epochs": 2}, "posthoc": ["ts"]}
    raw.update(changes)
    return [s.run_id for s in expand(parse_recipe(raw))]


def test_run_id_ignores_the_dataset_root_but_not_what_the_result_depends_on():
    base = _ids()
    assert _ids(datasets=[{"name": "cifar10", "root": "/elsewhere", "options": {"val_size": 100}}]) == base
    changed = [
        _ids(datasets=[{"name": "cifar10", "root": "/data/a", "options": {"val_size": 200}}]),
        _ids(seeds=[1]),
        _ids(methods=[{"cals-alm": {"margin": 6}}]),
        _ids(methods=[{"cals-alm": {"margin": 5, "rho_step": 1}}]),
        _ids(backbones=[{"mlp": {"hidden": 64}}]),
        _ids(train={"epochs": 3}),
    ]
    assert _ids(posthoc=["ts", "vs"]) == base    # calibrators are fitted on saved predictions
    assert all(len(ids) == 1 and ids != base for ids in changed)
    assert len({ids[0] for ids in changed}) == len(changed)
    # an explicit default is the same run as the implicit one (hash of the full hyper-parameters)
    assert _ids(methods=[{"cals-alm": {"margin": 5, "penalty": "phr"}}]) == base


def _done_run(directory, status="done"):
    directory.mkdir(parents=True)
    save_npz_atomic(directory / "predictions.npz", **{k: np.zeros((2, 3), np.float32) for k in PREDICTION_KEYS})
    write_json_atomic(directory / "metrics.json", {"run_id": "x", "status": status})


def test_store_done_only_with_status_done_and_predictions(tmp_path):
    _done_run(tmp_path / "a")
    assert is_done(tmp_path / "a")
    _done_run(tmp_path / "b", status="failed")
    assert not is_done(tmp_path / "b")
    _done_run(tmp_path / "c")
    (tmp_path / "c" / "predictions.npz").unlink()
    assert not is_done(tmp_path / "c")
    _done_run(tmp_path / "d")
    (tmp_path / "d" / "metrics.json").write_text('{"run_id": "x", "sta')      # torn by hand
    assert not is_done(tmp_path / "d")
    with pytest.raises(InputError, match="corrupt"):
        read_metrics(tmp_path / "d" / "metrics.json")


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing array", "not a zip"])
def test_a_done_run_with_damaged_predictions_is_not_done(tmp_path, damage):
    """metrics.json alone does not make a run done: its predictions must be a readable archive of
    the arrays a report needs (a truncated copy, say, is trained again)."""
    _done_run(tmp_path / "a")
    npz = tmp_path / "a" / "predictions.npz"
    data = npz.read_bytes()
    if damage == "truncated":
        npz.write_bytes(data[: len(data) - 30])
    elif damage == "empty":
        npz.write_bytes(b"")
    elif damage == "missing array":
        save_npz_atomic(npz, **{k: np.zeros(2) for k in PREDICTION_KEYS[1:]})
    else:
        npz.write_bytes(b"PK" + b"\0" * 200)
    assert not is_done(tmp_path / "a")
    assert predictions_problem(npz) is not None and str(npz) in predictions_problem(npz)


def test_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"run_id": "x", "status": "done"})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"run_id": "x", "status": "done", "ece": float("nan")})
    assert json.loads(path.read_text())["status"] == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_meta_split_is_carved_from_train_and_method_parameters_stay_out_of_the_optimizer(tmp_path, monkeypatch):
    import calbench.engine.build as build_module
    import calbench.methods as methods_module
    from calbench.runner.execute import execute_run
    from calbench.runner.store import run_dir

    made, optimised = [], []
    real_create, real_optimizer = methods_module.create_method, build_module.make_optimizer

    def create(*args, **kwargs):
        made.append(real_create(*args, **kwargs))
        return made[-1]

    def optimizer(params, cfg):
        params = list(params)
        optimised.extend(params)
        return real_optimizer(params, cfg)

    monkeypatch.setattr(methods_module, "create_method", create)
    monkeypatch.setattr(build_module, "make_optimizer", optimizer)
    spec = expand(parse_recipe({"name": "meta", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"],
                                "methods": ["gammanet-sece"], "train": {"epochs": 1, "batch_size": 128}}))[0]
    assert execute_run(spec.to_dict(), str(tmp_path)) == "done"
    extra = made[0].extra_parameters()
    assert extra and not {id(p) for p in extra} & {id(p) for p in optimised}
    splits = np.load(run_dir(tmp_path, "meta", spec.run_id) / "splits.npz")
    meta = splits["meta_positions_in_train"]
    n_train = len(splits["train"])
    assert len(np.unique(meta)) == len(meta) and meta.max() < n_train
    assert abs(len(meta) - round(0.1 * n_train)) <= 1          # meta_fraction 0.1 of train


def test_recipe_error_message_is_a_config_error_with_the_file(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(textwrap.dedent(BASE).replace("seeds: [0]", "seeds: [3, 3]"))
    with pytest.raises(ConfigError, match=r"dup\.yaml: seeds\[1\]"):
        expand(load_recipe(path))


def test_a_run_another_process_is_training_is_skipped_not_trained_twice(tmp_path):
    import fcntl

    from calbench.runner.execute import execute_run
    from calbench.runner.store import run_dir

    spec = expand(parse_recipe({"name": "lock", "seeds": [0], "datasets": ["digits"], "backbones": ["mlp"],
                                "methods": ["ce"], "train": {"epochs": 1, "batch_size": 256}}))[0]
    directory = run_dir(tmp_path, "lock", spec.run_id)
    directory.mkdir(parents=True)
    with open(directory / ".lock", "a") as held:          # as a second `calbench run` would hold it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert execute_run(spec.to_dict(), str(tmp_path)) == "skipped"
        assert not (directory / "metrics.json").exists() and not (directory / "config.json").exists()
    assert execute_run(spec.to_dict(), str(tmp_path)) == "done"         # released: trains it
    assert execute_run(spec.to_dict(), str(tmp_path)) == "skipped"      # done: never again
