"""calbench report --interval / --bins / --metrics on a finished store (docs/metrics.md, "Conventions")."""


def test_report_interval_bins_and_metrics_on_a_tiny_store(store):
    """--interval, --bins and --metrics (any registered key) on a finished store: the footnote and the
    CSV columns carry the settings."""
    from click.testing import CliRunner

    from calbench.cli import cli
    root = store
    args = ["report", "--results", str(root), "--bootstrap", "40", "--bins", "25", "--metrics", "ece,aece,ks"]
    res = CliRunner().invoke(cli, args + ["--interval", "bca", "--markdown"])
    assert res.exit_code == 0, res.output
    assert "95% bca bootstrap interval, B=40" in res.output
    assert "25 equal-width bins: ECE" in res.output and "25 equal-mass bins: AECE" in res.output
    csv = CliRunner().invoke(cli, ["report", "--results", str(root), "--csv", "--bins", "25", "--metrics", "ece"])
    assert csv.exit_code == 0, csv.output
    header = csv.output.splitlines()[0].split(",")
    assert {"bins", "binning", "scope", "scale", "interval", "B"} <= set(header)
