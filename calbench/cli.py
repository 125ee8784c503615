"""The `calbench` command: a click group whose subcommands are imported on first use."""

from __future__ import annotations

import importlib
import sys

import click

from calbench import __version__
from calbench.errors import CalbenchError

# name -> (import path, one-line help). Importing lazily keeps `calbench --help` fast
# (no torch import) and lets each command live in its own module.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("calbench.commands.run:run", "Train the matrix of runs a YAML recipe describes."),
    "status": ("calbench.commands.status:status", "Count done / running / failed / pending runs."),
    "report": ("calbench.commands.report:report", "Aggregate runs into the papers' tables with intervals."),
    "plot": ("calbench.commands.plot:plot", "Draw the papers' figures from a results directory."),
    "evaluate": ("calbench.commands.evaluate:evaluate", "Compute calibration metrics of a predictions file."),
    "list": ("calbench.commands.listing:list_group", "List methods, datasets, backbones or metrics."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        path, _ = COMMANDS[name]
        module, attr = path.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CalbenchError as err:
            click.echo(f"calbench: error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calbench")
def cli() -> None:
    """calbench: train-time calibration methods under one protocol.

    \b
    calbench run recipes/quickstart.yaml     train a recipe's matrix of runs
    calbench report --latex                  the papers' tables with bootstrap intervals
    calbench plot reliability                reliability diagrams (and the other figures)
    """


def main() -> None:
    cli(prog_name="calbench")


if __name__ == "__main__":
    sys.exit(main())
