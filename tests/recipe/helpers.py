"""Shared helpers: write a recipe and run `calbench run --dry-run` on it."""

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from calbench.cli import cli

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


@pytest.fixture
def dry_run(tmp_path):
    """dry_run(text or bytes, *extra args) -> (exit code, non-empty output lines, recipe path)."""

    def run(content, *args):
        path = tmp_path / "recipe.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
        result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--results", str(tmp_path / "r"), *args])
        lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
        assert not Path(tmp_path / "r").exists()
        return result.exit_code, lines, str(path)

    return run
