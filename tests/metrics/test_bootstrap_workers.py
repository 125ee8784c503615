"""The bootstrap split over forked worker processes gives the serial path's numbers bit for bit."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from calbench.metrics import METRICS, bootstrap_metrics, paired_bootstrap
from calbench.metrics import bootstrap as bootstrap_module
from calbench.metrics import forked

from .conftest import synth

pytestmark = pytest.mark.skipif(not forked.can_fork(), reason="the worker processes need fork (Linux)")


@pytest.fixture
def forks(monkeypatch):
    """Counts the children forked (their work is in other processes; the parent sees the forks)."""
    calls = []
    real = forked._fork

    def counted(task):
        calls.append(task)
        return real(task)

    monkeypatch.setattr(forked, "_fork", counted)
    return calls


def _every_key():
    return tuple(METRICS.names())


def _class_counts(k):
    return np.array([150, 90, 60, 30, 15, 8, 4][:k])


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_every_metric_equals_the_serial_samples_bit_for_bit(monkeypatch, forks, workers):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 3 * 400)  # 3 resamples a block: 14 blocks
    logits, labels = synth(400, 7, seed=2)
    logits = np.round(logits, 1)  # ties in confidence
    kw = dict(logits=logits, B=40, seed=5, keys=_every_key(), class_counts=_class_counts(7))
    serial = bootstrap_metrics(labels, **kw)
    parallel = bootstrap_metrics(labels, **kw, workers=workers)
    assert len(forks) == workers - 1
    assert parallel["point"] == serial["point"]
    for key in serial["samples"]:
        assert serial["samples"][key].shape == (40,)
        assert np.array_equal(parallel["samples"][key], serial["samples"][key], equal_nan=True), key
    assert parallel["ci"] == serial["ci"]


def test_every_block_counts_once_and_in_order(monkeypatch, forks):
    """A share assembled out of order, or a worker that skipped the wrong number of blocks, changes
    which resample lands at which row: the rows must follow bootstrap_indices exactly."""
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 2 * 300)
    logits, labels = synth(300, 4, seed=1)
    res = bootstrap_metrics(labels, logits=logits, B=23, seed=9, keys=("acc",), workers=4)
    assert len(forks) == 3
    idx = bootstrap_module.bootstrap_indices(300, 23, 9)
    correct = (logits.argmax(1) == labels).astype(np.float64)
    assert np.allclose(res["samples"]["acc"], correct[idx].mean(axis=1), rtol=0, atol=1e-15)


def test_paired_bootstrap_equals_the_serial_path(monkeypatch, forks):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 4 * 250)
    a, labels = synth(250, 5, seed=3)
    b = a * 0.6
    kw = dict(logits_a=a, logits_b=b, B=30, seed=1, keys=("ece", "aece", "tace", "smece", "kde-ece"))
    serial, parallel = paired_bootstrap(labels, **kw), paired_bootstrap(labels, **kw, workers=2)
    assert len(forks) == 1
    for key in serial["samples"]:
        assert np.array_equal(parallel["samples"][key], serial["samples"][key]), key


def test_claims_hand_out_every_number_once_across_processes():
    take = forked.Claims(1, shared=True)

    def grab():
        return [take() for _ in range(50)]

    got = forked.run_forked([grab, grab, grab])
    flat = sorted(v for part in got for v in part)
    assert flat == list(range(1, 151))
    assert all(part == sorted(part) for part in got)
    local = forked.Claims(3)
    assert [local(), local()] == [3, 4]


def test_a_worker_error_is_raised_here_and_every_child_reaped(monkeypatch):
    pids = []
    real = forked._fork

    def recorded(task):
        pid, fd = real(task)
        pids.append(pid)
        return pid, fd

    monkeypatch.setattr(forked, "_fork", recorded)

    def fails():
        raise ValueError("bad block")

    with pytest.raises(ValueError, match="bad block"):
        forked.run_forked([lambda: 1, fails, lambda: 3])
    with pytest.raises(RuntimeError, match="ended without a result"):
        forked.run_forked([lambda: 1, lambda: os._exit(3)])
    assert forked.run_forked([lambda: 1, lambda: np.arange(3), lambda: "x"])[1].tolist() == [0, 1, 2]
    assert len(pids) == 5
    for pid in pids:  # each child reaped (not a zombie left to wait for); other tests' children may live on
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_workers_must_be_positive():
    from calbench.errors import InputError

    logits, labels = synth(50, 3)
    with pytest.raises(InputError, match="workers"):
        bootstrap_metrics(labels, logits=logits, B=5, workers=0)


def test_fork_after_a_multithreaded_openmp_region_does_not_hang():
    """libgomp's thread pool does not survive fork; the workers run with one OpenMP thread, so a pool
    the parent already used with two threads (tace's kernel, unlimited) must not hang them."""
    code = (
        "import numpy as np\n"
        "from calbench.metrics import bootstrap_metrics\n"
        "from calbench.metrics import bootstrap as b\n"
        "b.BLOCK_ELEMENTS = 5 * 2000\n"
        "rng = np.random.default_rng(0)\n"
        "logits, labels = rng.normal(size=(2000, 40)) * 3, rng.integers(0, 40, 2000)\n"
        "one = bootstrap_metrics(labels, logits=logits, B=40, keys=('tace',))\n"
        "two = bootstrap_metrics(labels, logits=logits, B=40, keys=('tace',), workers=2)\n"
        "assert np.array_equal(one['samples']['tace'], two['samples']['tace'])\n"
        "print('ok')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_evaluate_workers_option_gives_the_same_json(tmp_path, monkeypatch, forks):
    from click.testing import CliRunner

    from calbench.cli import cli

    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 20 * 600)  # 10 blocks

    logits, labels = synth(600, 6, seed=4)
    path = tmp_path / "pred.npz"
    np.savez(path, logits=logits.astype(np.float32), labels=labels)
    outs = []
    for workers in ("1", "2"):
        res = CliRunner().invoke(cli, ["evaluate", str(path), "--json", "--bootstrap", "200",
                                       "--workers", workers, "--metrics", "ece,aece,tace,smece"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.output))
    assert len(forks) == 1
    assert outs[0] == outs[1]


def test_evaluate_limits_the_openmp_loaded_after_it_to_one_thread(tmp_path):
    """tace's kernel loads libgomp on first use, after evaluate set its limits: that pool must have
    one thread too (in a fresh interpreter, where nothing loaded libgomp before)."""
    logits, labels = synth(300, 5, seed=1)
    path = tmp_path / "pred.npz"
    np.savez(path, logits=logits, labels=labels)
    code = ("import sys\n"
            "from calbench.cli import cli\n"
            f"try: cli(['evaluate', {str(path)!r}, '--json', '--bootstrap', '20', '--metrics', 'tace'])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "from threadpoolctl import threadpool_info\n"
            "print('threads', sorted({p['num_threads'] for p in threadpool_info()}))\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "threads [1]", out.stdout


@pytest.mark.parametrize("runnable, cores, want", [("1/99", 2, 2), ("2/99", 2, 1), ("3/99", 2, 1),
                                                   ("3/120", 8, 6), ("1/5", 1, 1)])
def test_idle_cores_leaves_out_the_cores_other_processes_run_on(tmp_path, monkeypatch, runnable, cores, want):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"2.10 1.90 1.70 {runnable} 12345\n")
    monkeypatch.setattr(forked, "LOADAVG", str(loadavg))
    monkeypatch.setattr(forked, "available_cores", lambda: cores)
    monkeypatch.setattr(forked, "own_runnable_threads", lambda: 1)
    assert forked.idle_cores(reads=3, interval=0.0) == want
    # this process's own runnable threads (say OpenBLAS's, spinning) are not other processes
    monkeypatch.setattr(forked, "own_runnable_threads", lambda: 2)
    others = int(runnable.split("/")[0]) - 2
    assert forked.idle_cores(reads=3, interval=0.0) == max(1, min(cores, cores - others))
    monkeypatch.setattr(forked, "LOADAVG", str(tmp_path / "missing"))
    assert forked.idle_cores() == cores


def test_own_runnable_threads_reads_the_thread_states(tmp_path):
    for tid, state in ((11, "R"), (12, "S"), (13, "R"), (14, "D")):
        (tmp_path / str(tid)).mkdir()
        (tmp_path / str(tid) / "stat").write_text(f"{tid} (python (x) y) {state} 1 2 3\n")
    assert forked.own_runnable_threads(str(tmp_path)) == 2
    assert forked.own_runnable_threads(str(tmp_path / "missing")) == 1
    assert forked.own_runnable_threads() >= 1   # the real /proc: this thread is running
