"""create_method / method_hparams: names, typed hyper-parameters, errors that list and suggest."""

import pkgutil
import sys

import pytest
import torch

import calbench.methods as methods_pkg
from calbench.errors import ConfigError, UnknownNameError
from calbench.methods import METHODS, check_hparams, create_method, list_methods, method_hparams


def test_unknown_method_lists_the_valid_ones_and_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'cals-alm'") as err:
        create_method("cals_alm", 10)
    assert isinstance(err.value, UnknownNameError)
    for name in list_methods():
        assert name in str(err.value)


def test_unknown_hyper_parameter_lists_the_valid_ones_and_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'margin'") as err:
        create_method("mbls", 10, margni=5.0)
    assert isinstance(err.value, ConfigError)
    assert "valid: margin, weight, ignore_index" in str(err.value)


@pytest.mark.parametrize("name", list_methods())
def test_defaults_are_introspectable_typed_and_round_trip(name):
    defaults = method_hparams(name)
    assert defaults["ignore_index"] == -100
    assert all(isinstance(v, (bool, int, float, str)) for v in defaults.values())
    assert check_hparams(name, {}) == defaults
    method = create_method(name, 7, **defaults)
    assert method.num_classes == 7 and method.ignore_index == -100


def test_values_of_the_wrong_kind_are_rejected_and_ints_widen_to_floats():
    with pytest.raises(ConfigError, match="cals-alm.rho_step: expected an integer"):
        create_method("cals-alm", 3, rho_step=2.5)
    with pytest.raises(ConfigError, match="ls.alpha: expected a number"):
        create_method("ls", 3, alpha="0.1")
    assert check_hparams("fl", {"gamma": 2})["gamma"] == 2.0
    assert isinstance(check_hparams("fl", {"gamma": 2})["gamma"], float)


def test_published_defaults():
    assert method_hparams("ls")["alpha"] == 0.05
    assert method_hparams("fl")["gamma"] == 3.0
    assert method_hparams("mbls") == {"margin": 10.0, "weight": 0.1, "ignore_index": -100}
    alm = method_hparams("cals-alm")
    assert (alm["penalty"], alm["lambda_init"], alm["rho_init"], alm["rho_max"], alm["rho_growth"],
            alm["tau"], alm["rho_step"]) == ("phr", 1e-6, 1.0, 10.0, 1.2, 0.9, 10)
    assert method_hparams("cpc")["w_bd"] == 10.0 and method_hparams("mmce")["bandwidth"] == 0.4


def test_every_module_of_the_package_is_imported_so_a_new_file_registers_itself():
    for module in pkgutil.iter_modules(methods_pkg.__path__):
        assert f"calbench.methods.{module.name}" in sys.modules, module.name
    assert len(METHODS) == len(list_methods()) >= 11


def test_methods_are_modules_whose_state_moves_and_saves():
    method = create_method("cals-hr", 4)
    assert isinstance(method, torch.nn.Module)
    assert set(method.state_dict()) >= {"multipliers", "prev_penalty", "has_prev"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_non_finite_or_missing_numbers_are_rejected_naming_the_key(bad):
    with pytest.raises(ConfigError, match="mbls.margin: expected"):
        create_method("mbls", 3, margin=bad)
