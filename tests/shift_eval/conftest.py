"""A tiny finished store (digits, 1 epoch, 2 methods, 1 seed) shared by the shift tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from calbench.cli import cli

BASE = {"name": "tiny", "seeds": [0], "backbones": ["mlp"], "methods": ["ce", {"fl": {"gamma": 3}}],
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.1}, "posthoc": ["ts"],
        "datasets": [{"name": "digits"}]}
SHIFT = {"shift": [{"gaussian_noise": {"severities": [1, 3, 5]}}, {"pixelate": {"severities": [1, 3, 5]}}],
         "ood": ["gaussian", "inverted"]}


def write_recipe(path: Path, evaluate: dict | None) -> Path:
    recipe = {**BASE, "datasets": [{"name": "digits", **({"evaluate": evaluate} if evaluate else {})}]}
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="session")
def plain_store(tmp_path_factory):
    """A finished store trained WITHOUT evaluation sets (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("plain")
    result = run_cli("run", write_recipe(root / "tiny.yaml", None), "--results", root / "results", "--jobs", 1)
    assert result.exit_code == 0, result.output
    return root / "results"


@pytest.fixture(scope="session")
def shift_store(plain_store, tmp_path_factory):
    """The plain store after adding SHIFT to the recipe and running again (evaluation only)."""
    root = tmp_path_factory.mktemp("shifted")
    results = root / "results"
    shutil.copytree(plain_store, results)
    result = run_cli("run", write_recipe(root / "tiny.yaml", SHIFT), "--results", results, "--jobs", 1)
    assert result.exit_code == 0, result.output
    return results


@pytest.fixture
def store_tools():
    """(SHIFT, run_cli, write_recipe) for tests that run the CLI themselves."""
    return SHIFT, run_cli, write_recipe


@pytest.fixture(scope="session")
def compact_store(plain_store, tmp_path_factory):
    """The plain store evaluated on SHIFT with `storage: compact` (top-label rows, no logits)."""
    root = tmp_path_factory.mktemp("compact")
    results = root / "results"
    shutil.copytree(plain_store, results)
    result = run_cli("run", write_recipe(root / "tiny.yaml", {**SHIFT, "storage": "compact"}), "--results", results,
                     "--jobs", 1)
    assert result.exit_code == 0, result.output
    return results
