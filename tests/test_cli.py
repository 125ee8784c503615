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


def test_help_imports_nothing_heavy():
    """`calbench --help` stays instant: no array, training, plotting or table library is imported."""
    code = ("import sys; from calbench.cli import main; sys.argv=['calbench','--help'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'numpy', 'sklearn', 'pandas', 'matplotlib', 'scipy', 'rich'}\n"
            "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
            "assert not loaded, f'calbench --help imported {loaded}'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_plot_verbs_are_the_figure_registry():
    from calbench.report.figures import FIGURES

    result = CliRunner().invoke(cli, ["plot", "--help"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.startswith("  ")
              and not line.startswith("   ")]
    assert listed == sorted(FIGURES.names())
