"""The `calbench` entry point: help, version, lazy subcommands, one-line errors."""

import subprocess
import sys

from click.testing import CliRunner

import calbench
from calbench.cli import COMMANDS, cli


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert calbench.__version__ in result.output


def test_every_command_imports_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_unknown_command_exits_non_zero():
    result = CliRunner().invoke(cli, ["trian"])
    assert result.exit_code == 2


def test_help_does_not_import_torch():
    code = ("import sys; from calbench.cli import main; sys.argv=['calbench','--help'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'calbench --help imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
