"""Interval kinds (percentile, basic, bca), the jackknife through the weights path, and the
conventions record (docs/metrics.md, "Intervals" and "Conventions")."""

import json

import numpy as np
import pytest
from scipy.stats import norm

from calbench.errors import InputError
from calbench.metrics import METRICS, bootstrap_metrics, compute_metrics, paired_bootstrap, seed_bootstrap
from calbench.metrics.bootstrap import INTERVALS, Resampler, acceleration, bca_levels, interval
from calbench.metrics.conventions import metric_conventions
from calbench.metrics.inputs import prepare

from .conftest import synth


def test_basic_is_the_percentile_interval_reflected_about_the_point():
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 1.0, 999)
    q_lo, q_hi = np.percentile(samples, [2.5, 97.5])
    assert interval(samples, 1.5, 0.95, "percentile") == pytest.approx((q_lo, q_hi))
    assert interval(samples, 1.5, 0.95, "basic") == pytest.approx((3.0 - q_hi, 3.0 - q_lo))


def test_bca_levels_by_hand():
    # 30% of the samples below the point, one tie: z0 = Phi^-1((300 + 0.5) / 1001); a = 0.1
    samples = np.concatenate([np.zeros(300), [1.0], np.full(700, 2.0)])
    z0 = norm.ppf(300.5 / 1001)
    want = [norm.cdf(z0 + (z0 + z) / (1 - 0.1 * (z0 + z))) for z in (norm.ppf(0.025), norm.ppf(0.975))]
    assert bca_levels(samples, 1.0, 0.95, 0.1) == pytest.approx(tuple(want), abs=1e-12)
    u = np.array([1.0, -2.0, 0.5, 0.5])
    assert acceleration(u) == pytest.approx((u ** 3).sum() / (6 * (u ** 2).sum() ** 1.5))
    assert acceleration(np.zeros(5)) == 0.0


def test_bca_without_bias_or_skew_is_the_percentile_interval():
    samples = np.linspace(-1.0, 1.0, 1001)  # symmetric about the point 0: z0 = 0
    assert interval(samples, 0.0, 0.9, "bca", np.zeros(10)) == pytest.approx(interval(samples, 0.0, 0.9, "percentile"))


def test_bca_and_basic_move_a_biased_interval_back_over_the_point():
    """A nearly calibrated model: resampling inflates ece, the percentile interval sits high;
    basic and bca are lower and contain the point."""
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 600)
    labels = (rng.random(600) >= conf).astype(int)
    probs = np.stack([conf, 1 - conf], 1)
    out = {kind: bootstrap_metrics(labels, probs=probs, B=400, keys=("ece",), interval=kind) for kind in INTERVALS}
    point = out["percentile"]["point"]["ece"]
    for kind in ("basic", "bca"):
        lo, hi = out[kind]["ci"]["ece"]
        assert lo <= point <= hi, kind
        assert hi < out["percentile"]["ci"]["ece"][1], kind
        assert (out[kind]["samples"]["ece"] == out["percentile"]["samples"]["ece"]).all()  # same resamples
        assert out[kind]["interval"] == kind and out[kind]["B"] == 400


def _keys_without_extra_inputs():
    logits, labels = synth(60, 4)
    keys = []
    for key in METRICS.names():
        try:
            compute_metrics(labels, logits=logits, keys=(key,))
        except InputError:  # needs an input synthetic predictions do not have (train class counts)
            continue
        keys.append(key)
    return keys


@pytest.mark.parametrize("key", _keys_without_extra_inputs())
def test_jackknife_rows_equal_the_metric_without_the_left_out_samples(key):
    """The jackknife is count rows with zeros through the weights path (totals below n): every metric
    must give what it gives on the explicit subset."""
    logits, labels = synth(240, 5, seed=4)
    logits = np.round(logits, 1)  # ties
    rs = Resampler(prepare(labels, logits=logits), 15, (key,))
    parts = np.array_split(np.random.default_rng(0).permutation(240), 7)
    W = np.ones((7, 240))
    for row, part in enumerate(parts):
        W[row, rs.inv[part]] = 0.0
    got = rs.stats(W)[key]
    for row, part in enumerate(parts):
        keep = np.setdiff1d(np.arange(240), part)
        want = compute_metrics(labels[keep], logits=logits[keep], keys=(key,))[key]
        assert got[row] == pytest.approx(want, abs=1e-9), (key, row)


def test_jackknife_influence_values_leave_one_out_and_grouped(monkeypatch):
    from calbench.metrics import bootstrap as bootstrap_module

    logits, labels = synth(50, 3, seed=1)
    rs = Resampler(prepare(labels, logits=logits), 15, ("acc",))
    u = rs.jackknife(groups=100)["acc"]  # n <= groups: leave-one-out
    theta = np.array([compute_metrics(np.delete(labels, i), logits=np.delete(logits, i, 0), keys=("acc",))["acc"]
                      for i in range(50)])
    assert np.allclose(u, 49 / 50 * (theta.mean() - theta), atol=1e-12)
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 120)  # several blocks
    assert rs.jackknife(groups=10)["acc"].shape == (10,)


def test_every_kind_for_paired_and_two_level_and_bad_kind():
    logits, labels = synth(400, 4, seed=2)
    for kind in INTERVALS:
        same = paired_bootstrap(labels, logits_a=logits, logits_b=logits, B=30, keys=("ece",), interval=kind)
        assert same["ci"]["ece"] == (0.0, 0.0)
        runs = [{"labels": labels[i::2], "logits": logits[i::2]} for i in range(2)]
        res = seed_bootstrap(runs, B=60, keys=("ece", "acc"), interval=kind)
        assert res["interval"] == kind
        for k, (lo, hi) in res["ci"].items():
            assert lo <= hi, (kind, k)
    with pytest.raises(InputError, match="unknown interval"):
        bootstrap_metrics(labels, logits=logits, B=5, interval="student")


def test_conventions_record_every_key():
    conv = metric_conventions(("ece", "aece", "cece", "smece", "nll"), 25, interval="bca", B=200)
    assert conv["bins"] == 25 and conv["scale"] == "fraction" and conv["interval"] == "bca" and conv["B"] == 200
    assert conv["binning"] == {"ece": "equal-width", "aece": "equal-mass", "cece": "equal-width",
                               "smece": "kernel", "nll": "none"}
    assert conv["scope"]["cece"] == "class-wise" and conv["scope"]["ece"] == "top-label"
    assert set(metric_conventions()["binning"]) == set(k for k in METRICS.names() if METRICS.get(k).default
                                                         and not METRICS.get(k).segmentation_only)


def test_evaluate_interval_metrics_and_conventions(tmp_path):
    from click.testing import CliRunner

    from calbench.cli import cli

    logits, labels = synth(500, 4)
    path = tmp_path / "p.npz"
    np.savez(path, labels=labels, logits=logits)
    res = CliRunner().invoke(cli, ["evaluate", str(path), "--bootstrap", "50", "--interval", "basic",
                                    "--metrics", "ece,smece", "--bins", "10", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out["ci"]) == {"ece", "smece"}
    assert out["conventions"]["interval"] == "basic" and out["conventions"]["bins"] == 10
    bad = CliRunner().invoke(cli, ["evaluate", str(path), "--bootstrap", "5", "--interval", "nope"])
    assert bad.exit_code == 2 and "unknown interval 'nope'" in bad.output



def test_footnote_coverage_is_the_study_result_in_the_docs():
    """The coverage every footnote quotes (STUDY_COVERAGE) is the mean of the docs' study table."""
    import re
    from pathlib import Path

    from calbench.metrics.bootstrap import STUDY_COVERAGE

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    start = doc.index("### Which interval covers")
    rows = re.findall(r"^\| [\w-]+ \| [\d,]+ \| ([\d.]+)% \[[\d.]+\] \| ([\d.]+)% \[[\d.]+\] \| ([\d.]+)% \[[\d.]+\] \|$",
                      doc[start:], flags=re.M)
    assert len(rows) == 9
    for i, kind in enumerate(("percentile", "basic", "bca")):
        mean = sum(float(r[i]) for r in rows) / len(rows)
        assert round(mean, 1) == round(100 * STUDY_COVERAGE[kind], 1), kind
        assert f"{kind} {100 * STUDY_COVERAGE[kind]:.1f}%" in doc[start:]
