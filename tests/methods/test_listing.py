"""`calbench list methods` prints each method with its description and paper."""

from click.testing import CliRunner

from calbench.cli import cli
from calbench.methods import METHODS
from calbench.posthoc import POSTHOC


def test_list_methods_prints_every_method_with_description_and_paper():
    result = CliRunner().invoke(cli, ["list", "methods"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for entry in list(METHODS.entries()) + list(POSTHOC.entries()):
        line = next((ln for ln in result.output.splitlines()
                     if len(ln.split("│")) > 2 and ln.split("│")[1].strip() == entry.name), None)
        assert line is not None, entry.name
        assert entry.description.split()[0] in line
        assert entry.paper.split()[0] in line
