"""`calbench evaluate`: table and JSON output, bootstrap intervals, one-line errors with exit code 2."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.metrics import METRIC_KEYS, compute_metrics


def _run(*args):
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    return runner.invoke(cli, ["evaluate", *map(str, args)])


@pytest.fixture
def pred(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 5)) * 2
    labels = rng.integers(0, 5, 400)
    path = tmp_path / "pred.npz"
    np.savez(path, logits=logits.astype(np.float32), labels=labels)
    return path, logits.astype(np.float32), labels


def test_json_output_equals_compute_metrics(pred):
    path, logits, labels = pred
    res = _run(path, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert list(out) == list(METRIC_KEYS)
    assert out == pytest.approx(compute_metrics(labels, logits=logits))


def test_json_bootstrap_intervals_repeat(pred):
    path = pred[0]
    a = json.loads(_run(path, "--json", "--bootstrap", 50, "--seed", 3).stdout)
    b = json.loads(_run(path, "--json", "--bootstrap", 50, "--seed", 3).stdout)
    assert a == b
    assert set(a["ci"]) == set(METRIC_KEYS)
    assert all(len(v) == 2 and v[0] <= v[1] for v in a["ci"].values())


def test_table_output_and_bins(pred):
    path = pred[0]
    res = _run(path, "--bins", 10, "--bootstrap", 20)
    assert res.exit_code == 0
    assert "ece" in res.stdout and "95% CI" in res.stdout
    ten = json.loads(_run(path, "--json", "--bins", 10).stdout)
    assert ten["ece"] == pytest.approx(compute_metrics(pred[2], logits=pred[1], bins=10)["ece"])


def test_probs_segmentation_and_run_store_layouts(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4, 4))
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[0, 0] = 255
    np.savez(tmp_path / "seg.npz", logits=logits, labels=labels)
    out = json.loads(_run(tmp_path / "seg.npz", "--json", "--ignore-index", 255).stdout)
    assert out["miou"] == pytest.approx(compute_metrics(labels, logits=logits, ignore_index=255)["miou"])
    flat = rng.normal(size=(50, 3))
    p = np.exp(flat) / np.exp(flat).sum(1, keepdims=True)
    y = rng.integers(0, 3, 50)
    np.savez(tmp_path / "p.npz", probs=p, labels=y)
    np.savez(tmp_path / "store.npz", test_logits=flat, test_labels=y, val_logits=flat, val_labels=y)
    a = json.loads(_run(tmp_path / "p.npz", "--json").stdout)
    b = json.loads(_run(tmp_path / "store.npz", "--json").stdout)
    assert a == pytest.approx(b, abs=1e-9)


def _bad(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _cases(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 3))
    y = rng.integers(0, 3, 20)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    (tmp_path / "text.npz").write_text("not a zip file\n")
    nan = logits.copy()
    nan[4, 1] = np.nan
    inf = logits.copy()
    inf[2, 0] = np.inf
    return {
        "no such file": tmp_path / "missing.npz",
        "not an npz": tmp_path / "text.npz",
        "missing keys": _bad(tmp_path, "keys.npz", scores=logits, labels=y),
        "shape mismatch": _bad(tmp_path, "shape.npz", logits=logits, labels=y[:10]),
        "NaN or inf": _bad(tmp_path, "nan.npz", logits=nan, labels=y),
        "NaN or inf (first at row 2)": _bad(tmp_path, "inf.npz", logits=inf, labels=y),
        "labels out of range": _bad(tmp_path, "range.npz", logits=logits, labels=np.where(y == 0, 3, y)),
        "do not sum to 1": _bad(tmp_path, "sum.npz", probs=probs * 1.01, labels=y),
        "labels must be integers": _bad(tmp_path, "float.npz", logits=logits, labels=y + 0.5),
        "both 'logits' and 'probs'": _bad(tmp_path, "both.npz", logits=logits, probs=probs, labels=y),
    }


@pytest.mark.parametrize("problem", ["no such file", "not an npz", "missing keys", "shape mismatch", "NaN or inf",
                                     "NaN or inf (first at row 2)", "labels out of range", "do not sum to 1",
                                     "labels must be integers", "both 'logits' and 'probs'"])
def test_bad_input_is_one_line_exit_2(tmp_path, problem):
    path = _cases(tmp_path)[problem]
    res = _run(path, "--json")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("calbench: error: ")
    assert problem in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stdout == ""


def test_bad_input_subprocess_has_no_traceback(tmp_path):
    import subprocess
    import sys

    path = _bad(tmp_path, "range.npz", logits=np.zeros((3, 2)), labels=np.array([0, 1, 7]))
    proc = subprocess.run([sys.executable, "-c", "import sys; from calbench.cli import main; "
                           "sys.argv = ['calbench', 'evaluate', sys.argv[1]]; main()", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"calbench: error: {path}: labels out of range: label 7 at row 2, expected 0..1"]
