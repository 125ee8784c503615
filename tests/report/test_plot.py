"""`calbench plot`: the verbs come from the figure registry; every registered figure renders headless
(Agg) on a small store; damaged run files are one warning line each and the rest is still drawn."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import calbench.report.figures as figures_package
from calbench.cli import cli
from calbench.report.figures import FIGURES
from calbench.report.figures.base import figure

SWEEP = (("ce", "ce", {}),
         ("cals-alm", "cals-alm(margin=5)", {"margin": 5.0, "penalty": "phr"}),
         ("cals-alm", "cals-alm(margin=10)", {"margin": 10.0, "penalty": "phr"}),
         ("cals-alm", "cals-alm(margin=5,penalty=p2)", {"margin": 5.0, "penalty": "p2"}),
         ("cals-alm", "cals-alm(margin=10,penalty=p2)", {"margin": 10.0, "penalty": "p2"}))
GROUPS = (("digits", "mlp"), ("digits-lt", "mlp"))
FAST = {"tradeoff": ["--bootstrap", "50"]}  # options that only keep a registry-wide test quick


def plot(*args):
    return CliRunner().invoke(cli, ["plot", *args])


def written(res) -> list[Path]:
    paths = [Path(line) for line in res.stdout.splitlines() if line.strip()]
    assert paths
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    return paths


@pytest.fixture
def sweep_store(store_factory):
    return store_factory(methods=SWEEP, datasets=GROUPS, n=80)


@pytest.mark.parametrize("name", FIGURES.names())
def test_every_registered_figure_renders_headless(sweep_store, tmp_path, name):
    import matplotlib

    out = tmp_path / "figs"
    res = plot(name, "--results", str(sweep_store), "-o", str(out), *FAST.get(name, []))
    assert res.exit_code == 0, res.output
    paths = written(res)
    assert all(p.parent == out and p.read_bytes().startswith(b"\x89PNG") for p in paths)
    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("name", FIGURES.names())
def test_every_figure_is_a_verb_with_its_declared_options(name):
    entry = FIGURES.entry(name)
    res = plot(name, "--help")
    assert res.exit_code == 0, res.output
    assert entry.description.split()[0] in res.output
    for option in entry.meta["options"]:
        declared = option(lambda: None).__click_params__[0]
        assert declared.opts[-1] in res.output
    assert name in plot("--help").output


def test_every_module_of_the_package_registers_a_figure():
    modules = {m.name for m in pkgutil.iter_modules(figures_package.__path__)} - {"base"}
    registered = {FIGURES.get(n).__module__.rsplit(".", 1)[1] for n in FIGURES.names()}
    assert modules and modules == registered
    assert FIGURES.entry("reliability").paper == "CALS Figure 4"


def test_a_new_figure_is_one_registration(store, tmp_path, monkeypatch):
    monkeypatch.setattr(FIGURES, "_entries", dict(FIGURES._entries))
    seen = {}

    @figure("count", paper="none", needs_predictions=False,
            options=[importlib.import_module("click").option("--scale", type=int, default=1)])
    def count(results, out_dir, fmt="png", scale=1, **_):
        """Number of runs."""
        seen["n"] = scale * len(results.done)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "count.txt").write_text(str(seen["n"]))
        return [out_dir / "count.txt"]

    res = plot("count", "--results", str(store), "-o", str(tmp_path), "--scale", "3")
    assert res.exit_code == 0, res.output
    assert seen["n"] == 3 * 8 and res.stdout.strip() == str(tmp_path / "count.txt")


def test_posthoc_choices_come_from_the_posthoc_registry(store):
    from calbench.posthoc import POSTHOC

    for name in ("reliability", "tradeoff"):
        text = plot(name, "--help").output.replace("\n", " ")
        assert "[" + "|".join(POSTHOC.names()) + "]" in text
    res = plot("tradeoff", "--results", str(store), "--posthoc", "tss")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("calbench: error: ") and "did you mean 'ts'" in res.stderr


@pytest.mark.parametrize("name", [n for n in FIGURES.names() if "--posthoc" in plot(n, "--help").output])
@pytest.mark.parametrize("calibrator", __import__("calbench.posthoc", fromlist=["POSTHOC"]).POSTHOC.names())
def test_every_calibrator_is_drawn_after_refitting(store, tmp_path, name, calibrator):
    """Calibrators the store's recipe never ran are refitted from the saved validation predictions."""
    res = plot(name, "--results", str(store), "-o", str(tmp_path), "--posthoc", calibrator,
               *FAST.get(name, []))
    assert res.exit_code == 0, res.output
    assert written(res) and not res.stderr


def test_a_probability_output_calibrator_is_drawn(store, tmp_path, monkeypatch):
    """A calibrator returning probabilities (not logits) flows into the reliability panels and the tradeoff."""
    import numpy as np

    from calbench.posthoc import POSTHOC
    from calbench.posthoc.base import Calibrator

    monkeypatch.setattr(POSTHOC, "_entries", dict(POSTHOC._entries))

    @POSTHOC.register("uniform-mix", description="softmax mixed with the uniform distribution")
    class UniformMix(Calibrator):
        output = "probs"
        preserves_argmax = True

        def __init__(self, *, weight: float = 0.5) -> None:
            self.weight = weight

        def fit_arrays(self, logits, labels) -> None:
            pass

        def transform_array(self, logits):
            e = np.exp(logits - logits.max(1, keepdims=True))
            return (1 - self.weight) * e / e.sum(1, keepdims=True) + self.weight / logits.shape[1]

        def params(self) -> dict:
            return {}

        def load_params(self, params) -> None:
            pass

    for name, extra in (("reliability", []), ("tradeoff", FAST["tradeoff"])):
        res = plot(name, "--results", str(store), "-o", str(tmp_path / name), "--posthoc", "uniform-mix:weight=0.9",
                   *extra)
        assert res.exit_code == 0, res.output
        assert written(res)
    assert "weight=0.9" in written(res)[0].name


def test_reliability_options_and_pdf(sweep_store, tmp_path):
    res = plot("reliability", "--results", str(sweep_store), "-o", str(tmp_path), "--bins", "25",
               "--format", "pdf", "--posthoc", "ts")
    assert res.exit_code == 0, res.output
    paths = written(res)
    assert len(paths) == len(GROUPS) and all("25bins" in p.name for p in paths)
    assert all(p.suffix == ".pdf" and p.read_bytes().startswith(b"%PDF") for p in paths)


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
    res = plot("ablation", "--results", str(store), "--metrics", "ece,eec")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "did you mean 'ece'" in res.stderr


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "quickstart").iterdir() if (p / "metrics.json").exists())


def damage(root: Path) -> dict[str, Path]:
    """metrics.json = [] and a truncated predictions.npz in two runs, and recipe.json = []."""
    first, second = run_dirs(root)[:2]
    (first / "metrics.json").write_text("[]")
    npz = second / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    (root / "quickstart" / "recipe.json").write_text("[]")
    return {"metrics": first / "metrics.json", "predictions": npz, "recipe": root / "quickstart" / "recipe.json"}


@pytest.mark.parametrize("name", FIGURES.names())
def test_damaged_files_are_one_line_each_and_the_rest_is_drawn(sweep_store, tmp_path, name):
    bad = damage(sweep_store)
    res = plot(name, "--results", str(sweep_store), "-o", str(tmp_path), *FAST.get(name, []))
    assert res.exit_code == 0, res.output
    written(res)
    warnings = res.stderr.strip().splitlines()
    assert all(line.startswith("calbench: warning: ") for line in warnings)
    assert sum(str(bad["metrics"]) in line for line in warnings) == 1
    assert sum(str(bad["recipe"]) in line for line in warnings) == 1
    needs = FIGURES.entry(name).meta["needs_predictions"]
    assert sum(str(bad["predictions"]) in line for line in warnings) == int(needs)
    assert "Traceback" not in res.output and len(warnings) == 2 + int(needs)


def test_a_damaged_file_with_a_calibrator_is_still_one_line(sweep_store, tmp_path):
    bad = damage(sweep_store)
    res = plot("reliability", "--results", str(sweep_store), "-o", str(tmp_path), "--posthoc", "vs")
    assert res.exit_code == 0, res.output
    assert len(written(res)) == len(GROUPS)
    assert sum(str(bad["predictions"]) in line for line in res.stderr.splitlines()) == 1


def test_ablation_series_keep_every_other_setting():
    from calbench.report.figures.ablation import series_name

    assert series_name("cals-alm(penalty=p2,margin=5)", "margin") == "cals-alm(penalty=p2)"
    assert series_name("cals-alm(margin=5,penalty=p2)", "margin") == "cals-alm(penalty=p2)"
    assert series_name("mbls(margin=10)", "margin") == "mbls"
    assert series_name("x(max_margin=3,margin=5)", "margin") == "x(max_margin=3)"
