"""`calbench evaluate PRED.npz --posthoc NAME --fit-on VAL.npz`: every registered calibrator, fitted on
VAL only, scored like the engine; one-line errors (exit 2) for the documented mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.metrics import compute_metrics
from calbench.posthoc import POSTHOC, calibrated_scores, fit_calibrator


def predictions(n, k, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.0
    return (3.0 * z).astype(np.float32), labels


@pytest.fixture
def files(tmp_path):
    val_logits, val_labels = predictions(600, 4, seed=1)
    test_logits, test_labels = predictions(400, 4, seed=2)
    np.savez(tmp_path / "val.npz", labels=val_labels, logits=val_logits)
    np.savez(tmp_path / "test.npz", labels=test_labels, logits=test_logits)
    np.savez(tmp_path / "store.npz", val_labels=val_labels, val_logits=val_logits, test_labels=test_labels,
             test_logits=test_logits)
    np.savez(tmp_path / "five.npz", labels=test_labels, logits=np.zeros((400, 5), np.float32))
    return tmp_path, (val_logits, val_labels, test_logits, test_labels)


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


@pytest.mark.parametrize("name", POSTHOC.names())
def test_every_calibrator_scores_pred_after_a_fit_on_val(files, name):
    tmp, (val_logits, val_labels, test_logits, test_labels) = files
    result = run(tmp / "test.npz", "--posthoc", name, "--fit-on", tmp / "val.npz", "--json")
    assert result.exit_code == 0, result.output
    scores, kind = calibrated_scores(fit_calibrator(name, val_logits, val_labels), test_logits)
    expected = compute_metrics(test_labels, **{kind: scores})
    got = json.loads(result.output)
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_a_run_store_file_fits_on_its_validation_half(files):
    tmp, _ = files
    a = json.loads(run(tmp / "test.npz", "--posthoc", "hb", "--fit-on", tmp / "val.npz", "--json").output)
    b = json.loads(run(tmp / "test.npz", "--posthoc", "hb", "--fit-on", tmp / "store.npz", "--json").output)
    assert a == b


@pytest.mark.parametrize("args, message", [
    (("--posthoc", "hb"), "--posthoc NAME and --fit-on VAL.npz go together"),
    (("--fit-on", "{val}"), "--posthoc NAME and --fit-on VAL.npz go together"),
    (("--posthoc", "hbb", "--fit-on", "{val}"), "did you mean 'hb'"),
    (("--posthoc", "hb", "--fit-on", "{five}"), "has 5 classes but"),
    (("--posthoc", "hb", "--fit-on", "{missing}"), "no such file"),
])
def test_mistakes_are_one_line_exit_2(files, args, message):
    tmp, _ = files
    paths = {"val": tmp / "val.npz", "five": tmp / "five.npz", "missing": tmp / "nope.npz"}
    result = run(tmp / "test.npz", *[a.format(**paths) for a in args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and result.output.count("calbench: error:") == 1
