"""What users do to `calbench run`: a machine smaller than the defaults, long matrices on narrow
terminals, values that break JSON, a full disk, shared or read-only result folders, damaged stores,
bad launcher flags. Each test fails on the behaviour it guards against."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.recipe import expand, parse_recipe
from calbench.runner import execute, store
from calbench.runner.execute import execute_run, execute_run_reporting, failure_reason, record_failure
from calbench.runner.store import PREDICTION_KEYS, is_done, read_metrics, run_dir, run_state
from calbench.runner.submitit_launcher import (RUN_MEMORY_GB, SLURM_ARRAY_PARALLELISM, SubmititOptions,
                                               _run_local, local_parallelism)


def specs_of(methods=("ce",), seeds=(0,), epochs=1, name="rb", **train):
    return expand(parse_recipe({"name": name, "seeds": list(seeds), "datasets": ["digits"],
                                "backbones": ["mlp"], "methods": list(methods),
                                "train": {"epochs": epochs, "batch_size": 256, **train}}))


def strict_json(path: Path):
    """Parse as strict JSON: NaN / Infinity tokens are an error, as in every other JSON reader."""
    def refuse(token):
        raise ValueError(f"non-standard JSON number {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------- local submitit parallelism


def test_local_parallelism_fits_cores_memory_and_gpus():
    assert local_parallelism("cpu", cores=2, memory_gb=24) == 2
    assert local_parallelism("cpu", cores=64, memory_gb=24) == int(24 // RUN_MEMORY_GB)
    assert local_parallelism("cpu", cores=64, memory_gb=0.5) == 1          # never zero
    assert local_parallelism("cuda", cores=64, memory_gb=512, gpus=3) == 3
    assert local_parallelism("cuda", gpus_per_run=2, cores=64, memory_gb=512, gpus=4) == 2
    assert local_parallelism("cpu", gpus_per_run=2, cores=8, memory_gb=512) == 4   # ranks are processes
    assert local_parallelism("cpu", cores=2, memory_gb=None) == 2


def test_default_parallelism_local_fits_the_machine_slurm_keeps_its_own(monkeypatch):
    monkeypatch.setattr("calbench.runner.submitit_launcher._cores", lambda: 2)
    monkeypatch.setattr("calbench.runner.submitit_launcher._available_memory_gb", lambda: 24.0)
    assert SubmititOptions(cluster="local").parallelism("cpu") == 2
    assert SubmititOptions(cluster="slurm").parallelism("cuda") == SLURM_ARRAY_PARALLELISM
    assert SubmititOptions(cluster="local", array_parallelism=5).parallelism("cpu") == 5
    run_help = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    assert "fits this machine" in run_help


def test_local_jobs_are_judged_by_the_store_never_by_unpickling(tmp_path):
    """A finished local job's outcome is its run's metrics.json; submitit's result pickle (which
    lives in the results folder) is never loaded."""
    spec = {"run_id": "aaaaaaaaaaaa"}

    class Job:
        job_id = "1"

        def done(self):
            return True

        def result(self):
            raise AssertionError("unpickled a result from the store")

    class Executor:
        def submit(self, *args):
            return Job()

    directory = tmp_path / "r" / spec["run_id"]
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps({"run_id": spec["run_id"], "status": "done"}))
    np.savez(directory / "predictions.npz", **{k: np.zeros(1) for k in PREDICTION_KEYS})
    lines = []
    _run_local(Executor(), [spec], (), 1, lambda s, j: None, lines.append, "r", tmp_path)
    assert "1 done" in lines[-1]


# ---------------------------------------------------------------- the summary


def fake_specs(n):
    from calbench.specs import RunSpec

    return [RunSpec(recipe="q", method="ls", method_label=f"ls(alpha=0.{i:02d}, extra_long_name=1)",
                    hparams={}, dataset="digits", root=None, dataset_options={}, backbone="mlp",
                    backbone_options={}, seed=i % 3, train={}, posthoc=("ts",), order={},
                    run_id=f"{i:012x}") for i in range(n)]


def summary_text(n, failed=(), verbose=False, width=80, height=25):
    from rich.console import Console

    from calbench.commands.run import _summary

    out = io.StringIO()
    console = Console(file=out, width=width, height=height, force_terminal=False)
    specs = fake_specs(n)
    statuses = {s.run_id: "failed" if i in failed else "done" for i, s in enumerate(specs)}
    reasons = {specs[i].run_id: "no space left on device writing x/metrics.json" for i in failed}
    _summary("q", specs, statuses, reasons, "res", console, verbose, 12.0)
    return out.getvalue()


def test_long_matrix_summary_is_counts_failures_and_the_next_command():
    text = summary_text(66, failed=(3,))
    lines = text.splitlines()
    assert len(lines) <= 4, text                       # no 66-row table
    assert "66 runs" in text and "65 done" in text and "1 failed" in text
    assert "no space left on device writing x/metrics.json" in text and "000000000003" in text
    assert "calbench report --results res --recipe q" in text


def test_per_run_table_with_verbose_one_line_per_row_on_80_columns():
    text = summary_text(66, verbose=True)
    rows = [ln for ln in text.splitlines() if "digits" in ln]
    assert len(rows) == 66                             # each run's row on one line: no wrapped labels
    assert max(len(ln) for ln in text.splitlines()) <= 80
    assert "seed" in text and "time" in text                # the numbers' columns are not cut


def test_short_matrix_that_fits_shows_its_table():
    assert sum("digits" in ln for ln in summary_text(3, width=200).splitlines()) == 3


# ---------------------------------------------------------------- the failure path


def test_record_failure_writes_strict_json_whatever_the_config_holds(tmp_path):
    spec = specs_of()[0]
    bad = type(spec).from_dict({**spec.to_dict(), "train": {**spec.train, "lr": float("nan"),
                                                             "grad_clip": float("inf")}})
    assert record_failure(bad, tmp_path, "lr is nan") is None
    rec = strict_json(run_dir(tmp_path, "rb", spec.run_id) / "metrics.json")
    assert rec["status"] == "failed" and rec["config"]["train"]["lr"] == "nan"
    assert rec["config"]["train"]["grad_clip"] == "inf"


def test_a_run_whose_config_breaks_json_fails_with_a_reason_and_nothing_raises(tmp_path):
    spec = specs_of()[0]
    bad = {**spec.to_dict(), "train": {**spec.train, "lr": float("nan")}}
    status, reason = execute_run_reporting(bad, str(tmp_path))
    assert status == "failed" and reason
    directory = run_dir(tmp_path, "rb", spec.run_id)
    assert strict_json(directory / "metrics.json")["status"] == "failed"
    assert strict_json(directory / "config.json")["train"]["lr"] == "nan"
    assert not is_done(directory)


def _full_disk_for(monkeypatch, pattern):
    """fsync of any file whose name contains `pattern` fails with ENOSPC, as on a full disk."""
    real = os.fsync

    def fsync(fd):
        if pattern in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd's file")
def test_full_disk_is_one_clear_line_nothing_half_written_is_done_and_the_resume_is_exact(tmp_path, monkeypatch):
    spec = specs_of(epochs=2)[0]
    reference = tmp_path / "reference"
    assert execute_run(spec.to_dict(), str(reference)) == "done"
    with monkeypatch.context() as patch:               # the disk fills when the predictions are written
        _full_disk_for(patch, ".predictions.npz.")
        status, reason = execute_run_reporting(spec.to_dict(), str(tmp_path / "full"))
    directory = run_dir(tmp_path / "full", "rb", spec.run_id)
    assert status == "failed"
    assert reason == f"no space left on device writing {directory / 'predictions.npz'}"
    assert read_metrics(directory / "metrics.json")["reason"] == reason
    assert not is_done(directory) and not (directory / "predictions.npz").exists()
    assert not list(directory.glob(".*.tmp"))
    assert execute_run(spec.to_dict(), str(tmp_path / "full")) == "done"          # space freed
    got = read_metrics(directory / "metrics.json")["metrics"]
    assert got == read_metrics(run_dir(reference, "rb", spec.run_id) / "metrics.json")["metrics"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd's file")
def test_a_disk_too_full_to_record_the_failure_still_returns_one_line(tmp_path, monkeypatch):
    spec = specs_of()[0]
    _full_disk_for(monkeypatch, str(tmp_path))         # every write in the store fails
    status, reason = execute_run_reporting(spec.to_dict(), str(tmp_path))
    assert status == "failed" and "\n" not in reason
    assert reason.startswith("no space left on device writing ") and "config.json" in reason
    assert "could not record the failure" in reason
    assert not is_done(run_dir(tmp_path, "rb", spec.run_id))


def test_torch_writer_failure_on_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "_disk_full", lambda d: True)
    err = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 3200 vs 3100")
    assert failure_reason(err, tmp_path) == f"no space left on device writing {tmp_path / 'checkpoint.pt'}"


def test_the_parent_survives_a_failure_it_cannot_record_and_runs_the_rest(tmp_path, monkeypatch):
    from calbench.runner.scheduler import plan_slots, run_matrix

    specs = specs_of(methods=("ce", "ls"))
    victim = specs[0].run_id
    monkeypatch.setenv("CALBENCH_TEST_CRASH_RUN", victim)          # its worker dies hard
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "metrics.json")

    def no_space(*args, **kwargs):
        raise full

    monkeypatch.setattr(execute, "write_json_atomic", no_space)    # the parent's own writes fail
    result = run_matrix(specs, str(tmp_path), plan_slots(None, 1))
    assert result.status[victim] == "failed"
    assert "no space left on device writing metrics.json" in result.reasons[victim]
    assert result.status[specs[1].run_id] == "done"               # the matrix went on


# ---------------------------------------------------------------- the store


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077])
def test_store_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        store.write_json_atomic(tmp_path / "m.json", {"a": 1})
        store.save_npz_atomic(tmp_path / "p.npz", a=np.zeros(1))
    finally:
        os.umask(old)
    for name in ("m.json", "p.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_planted_pickle_in_predictions_is_never_loaded(tmp_path):
    """Deciding whether a run is done reads the archive's directory only: an object array whose
    unpickling would run code does not run it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    directory = tmp_path / "r" / "aaaaaaaaaaaa"
    directory.mkdir(parents=True)
    arrays = {k: np.zeros(1) for k in PREDICTION_KEYS}
    arrays["test_logits"] = np.array([Payload()], dtype=object)
    np.savez(directory / "predictions.npz", **arrays)
    (directory / "metrics.json").write_text(json.dumps({"run_id": directory.name, "status": "done"}))
    is_done(directory)
    run_state(directory)
    assert not marker.exists()


def test_a_done_run_with_truncated_predictions_is_trained_again(tmp_path):
    spec = specs_of()[0]
    assert execute_run(spec.to_dict(), str(tmp_path)) == "done"
    npz = run_dir(tmp_path, "rb", spec.run_id) / "predictions.npz"
    npz.write_bytes(npz.read_bytes()[:-100])
    assert not is_done(npz.parent)
    assert execute_run(spec.to_dict(), str(tmp_path)) == "done"   # not "skipped"
    with zipfile.ZipFile(npz) as archive:
        assert archive.testzip() is None


# ---------------------------------------------------------------- command-line checks


RECIPE = "name: c\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\nmethods: [ce]\ntrain: {epochs: 1}\n"


def invoke(tmp_path, *args):
    recipe = tmp_path / "c.yaml"
    recipe.write_text(RECIPE)
    return CliRunner().invoke(cli, ["run", str(recipe), *args])


def one_line_error(out, needle):
    assert out.exit_code == 2, out.output
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("calbench: error:") and needle in lines[0], out.output


def test_uncreatable_results_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "afile").write_text("")
    out = invoke(tmp_path, "--results", str(tmp_path / "afile" / "results"))
    one_line_error(out, "--results")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_is_one_line_before_anything_runs(tmp_path):
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(0o555)
    try:
        one_line_error(invoke(tmp_path, "--results", str(results)), "--results")
        assert not list(results.iterdir())
    finally:
        results.chmod(0o755)


def test_read_only_results_check_itself(tmp_path, monkeypatch):
    """The write probe (the only check that works for root too) refuses a folder it cannot write."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    one_line_error(invoke(tmp_path, "--results", str(tmp_path / "r")), "cannot write there")
    assert not (tmp_path / "r" / "c").exists()


@pytest.mark.parametrize("args, needle", [
    (("--gpus", "0,0"), "listed twice"),
    (("--gpus-per-run", "0"), "--gpus-per-run"),
    (("--array-parallelism", "0"), "--array-parallelism"),
    (("--time", "-1"), "--time"),
])
def test_bad_launcher_flags_are_one_line(tmp_path, args, needle):
    one_line_error(invoke(tmp_path, "--results", str(tmp_path / "r"), *args), needle)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- start-up and threads


def test_the_parent_side_of_the_runner_imports_no_torch():
    """Scheduling, recording failures, the store and the launcher are torch-free in the parent
    (torch costs seconds to import; workers import it, the parent need not)."""
    code = ("import sys; import calbench.commands.run, calbench.commands.status, calbench.runner.store, "
            "calbench.runner.scheduler, calbench.runner.execute, calbench.runner.submitit_launcher, "
            "calbench.runner.distributed_run; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_a_training_run_imports_no_table_plot_or_sklearn_library(tmp_path):
    """A run (train, temperature scaling, metrics, writing) never needs scikit-learn, pandas or
    matplotlib; importing scikit-learn alone costs ~0.9 s of a ~5 s quickstart run, and the posthoc
    registry imports isotonic / irm in every run."""
    recipe = tmp_path / "one.yaml"
    recipe.write_text("name: one\nseeds: [0]\ndatasets: [digits]\nbackbones: [mlp]\nmethods: [ce]\n"
                      "train: {epochs: 1}\nposthoc: [ts]\n")
    code = ("import sys\nfrom calbench.cli import cli\n"
            f"cli.main(['run', {str(recipe)!r}, '--results', {str(tmp_path / 'r')!r}, '--jobs', '1'], "
            "standalone_mode=False)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'pandas', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CALBENCH_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]
    assert list((tmp_path / "r").glob("one/*/metrics.json"))


def test_cpu_slots_share_the_cores_as_threads(monkeypatch):
    from calbench.runner import scheduler

    monkeypatch.setattr(scheduler, "_cores", lambda: 8)
    slots = scheduler.plan_slots(None, 3)
    assert [s.threads for s in slots] == [2, 2, 2]
    assert all(s.env["OMP_NUM_THREADS"] == "2" for s in slots)
    assert scheduler.plan_slots([0, 1], 2)[0].threads == 2


def test_single_process_runs_set_their_threads(tmp_path):
    import torch

    from calbench.runner.distributed_run import run_distributed

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_distributed(specs_of()[0].to_dict(), str(tmp_path), device="cpu", gpus=1, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
