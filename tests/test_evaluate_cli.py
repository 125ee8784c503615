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
    assert set(out.pop("conventions")) >= {"bins", "binning", "scope", "scale"}  # the estimator settings
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
    assert a.pop("conventions") == b.pop("conventions")
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


def _npz_with_header(path, key_shapes):
    """An uncompressed npz whose members carry the given (key, shape) headers but only a few bytes of
    data each: what a forged or cut file looks like to the loader."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for key, shape, dtype in key_shapes:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                       "shape": shape})
            zf.writestr(key + ".npy", buf.getvalue() + b"\0" * 128)
    return path


def _damaged(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 10))
    y = rng.integers(0, 10, 2000)
    np.savez_compressed(tmp_path / "good.npz", logits=logits, labels=y)
    raw = bytearray((tmp_path / "good.npz").read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 200] = bytes(200)  # zeroed bytes inside the compressed logits stream
    (tmp_path / "corrupt.npz").write_bytes(bytes(raw))
    (tmp_path / "truncated.npz").write_bytes(bytes(raw[: len(raw) // 3]))
    (tmp_path / "zero.npz").write_bytes(b"")
    np.savez(tmp_path / "nothing.npz")
    np.save(tmp_path / "huge.npy", np.zeros(3))
    head = bytearray((tmp_path / "huge.npy").read_bytes())
    return {
        "claims 1 TB": _npz_with_header(tmp_path / "tb.npz", [("labels", (10,), "<i8"),
                                                              ("logits", (250_000_000_000, 1), "<f4")]),
        "corrupted compressed": tmp_path / "corrupt.npz",
        "truncated": tmp_path / "truncated.npz",
        "zero bytes": tmp_path / "zero.npz",
        "no arrays": tmp_path / "nothing.npz",
        "logits 1-D": _bad(tmp_path, "flat.npz", logits=logits[:, 0], labels=y),
        "logits 3-D": _bad(tmp_path, "cube.npz", logits=logits.reshape(2000, 5, 2), labels=y),
        "single npy": tmp_path / "huge.npy" if head else None,
        "mangled header": _mangled(tmp_path / "mangled.npz"),
    }


def _mangled(path):
    """A member whose header dict is cut inside a string (numpy's parser raises on it)."""
    import struct
    import zipfile

    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 'x\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("labels.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text)
        zf.writestr("logits.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text)
    return path


WANT = {"claims 1 TB": "claims shape (250000000000, 1)", "corrupted compressed": "damaged or truncated",
        "truncated": "damaged or truncated", "zero bytes": "empty file", "no arrays": "empty npz",
        "logits 1-D": "must have shape", "logits 3-D": "must have shape", "single npy": "single .npy",
        "mangled header": "damaged or truncated"}


@pytest.mark.parametrize("problem", sorted(WANT))
def test_damaged_files_are_one_line_naming_the_file(tmp_path, problem):
    path = _damaged(tmp_path)[problem]
    res = _run(path, "--json")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"calbench: error: {path}: ")
    assert WANT[problem] in lines[0]
    assert "Traceback" not in res.stderr + res.stdout


def test_header_larger_than_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    from calbench.commands import evaluate as evaluate_module

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", logits=rng.normal(size=(1000, 4)), labels=rng.integers(0, 4, 1000))
    monkeypatch.setattr(evaluate_module, "available_memory", lambda: 10_000)
    res = _run(tmp_path / "big.npz", "--json")
    assert res.exit_code == 2
    assert "more than the 10.0 KB of memory available" in res.stderr


def test_evaluate_runs_single_threaded(pred):
    import torch

    before = torch.get_num_threads()
    try:
        assert _run(pred[0], "--json").exit_code == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_list_metrics_shows_every_registered_metric():
    from calbench.metrics import METRICS

    res = CliRunner().invoke(cli, ["list", "metrics"], terminal_width=250, env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for spec in (e.obj for e in METRICS.entries()):
        assert spec.key in res.output and spec.name in res.output


def test_list_posthoc_shows_every_calibrator_with_its_hyper_parameters():
    from calbench.posthoc import POSTHOC, calibrator_hparams

    res = CliRunner().invoke(cli, ["list", "posthoc"], terminal_width=300, env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    for entry in POSTHOC.entries():
        line = next(row for row in res.output.splitlines() if row.startswith(f"│ {entry.name} "))
        assert entry.obj.output in line
        for key, value in calibrator_hparams(entry.name).items():
            assert f"{key}={value}" in line


def test_list_eval_sets_shows_every_registered_set_and_whether_it_needs_a_root():
    from calbench.shift import EVAL_SETS

    res = CliRunner().invoke(cli, ["list", "eval-sets"], terminal_width=300, env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    for entry in EVAL_SETS.entries():
        line = next(row for row in res.output.splitlines() if row.startswith(f"│ {entry.name} "))
        assert entry.meta["kind"] in line
        assert ("yes" if entry.obj.needs_root else "generated") in line
