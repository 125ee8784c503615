"""`calbench plot`: every verb renders non-empty figures headless; nothing to draw is a one-line error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.report.figures import FIGURES

SWEEP = (("ce", "ce", {}),
         ("cals-alm", "cals-alm(margin=5)", {"margin": 5.0, "penalty": "phr"}),
         ("cals-alm", "cals-alm(margin=10)", {"margin": 10.0, "penalty": "phr"}),
         ("cals-alm", "cals-alm(margin=5,penalty=p2)", {"margin": 5.0, "penalty": "p2"}),
         ("cals-alm", "cals-alm(margin=10,penalty=p2)", {"margin": 10.0, "penalty": "p2"}))


def plot(*args):
    return CliRunner().invoke(cli, ["plot", *args])


def written(res):
    from pathlib import Path
    paths = [Path(line) for line in res.stdout.splitlines() if line.strip()]
    assert paths
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    return paths


def test_registry_has_the_four_figures():
    assert FIGURES.names() == ["reliability", "tradeoff", "curves", "ablation"]
    assert FIGURES.entry("reliability").paper == "CALS Figure 4"


@pytest.mark.parametrize("verb,extra", [("reliability", []), ("reliability", ["--bins", "25", "--format", "pdf"]),
                                        ("tradeoff", ["--bootstrap", "50"]), ("curves", []), ("ablation", [])])
def test_every_verb_writes_figures(store_factory, tmp_path, verb, extra):
    root = store_factory(methods=SWEEP, datasets=(("digits", "mlp"), ("digits-lt", "mlp")), n=80)
    out = tmp_path / "figs"
    res = plot(verb, "--results", str(root), "-o", str(out), *extra)
    assert res.exit_code == 0, res.output
    paths = written(res)
    assert all(p.parent == out for p in paths)
    if verb in ("reliability", "curves", "ablation"):
        assert len(paths) == 2  # one per dataset / backbone
    if "pdf" in extra:
        assert all(p.suffix == ".pdf" and p.read_bytes().startswith(b"%PDF") for p in paths)
    else:
        assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_default_output_folder_and_filter(store):
    res = plot("reliability", "--results", str(store), "--filter", "method=ce")
    assert res.exit_code == 0, res.output
    (path,) = written(res)
    assert path.parent == store / "quickstart" / "figures"


def test_nothing_to_plot_is_one_line(store):
    res = plot("ablation", "--results", str(store))  # no method swept margin
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("calbench: error: nothing to plot for ablation")
    assert len(res.stderr.strip().splitlines()) == 1
    res = plot("curves", "--results", str(store), "--filter", "dataset=cifar*")
    assert res.exit_code == 2 and "nothing to plot for curves" in res.stderr
    res = plot("curves", "--results", str(store), "--filter", "colour=red")
    assert res.exit_code == 2 and "--filter" in res.stderr


def test_ablation_series_keep_every_other_setting():
    from calbench.report.figures.ablation import series_name

    assert series_name("cals-alm(penalty=p2,margin=5)", "margin") == "cals-alm(penalty=p2)"
    assert series_name("cals-alm(margin=5,penalty=p2)", "margin") == "cals-alm(penalty=p2)"
    assert series_name("mbls(margin=10)", "margin") == "mbls"
    assert series_name("x(max_margin=3,margin=5)", "margin") == "x(max_margin=3)"
