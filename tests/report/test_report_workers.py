"""Table cells computed in worker processes (calbench/report/pool.py) equal those computed in the parent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calbench.report import compute_cells, load_results
from calbench.report import pool

from conftest import make_store

KEYS = ("acc", "ece", "aece", "smece")


@pytest.fixture
def restore_workers():
    yield
    pool.set_workers(None)


def _cells(results, workers):
    pool.set_workers(workers)
    return compute_cells(results, keys=KEYS, B=60, seed=3, ci=0.9, reference="ce")


def test_workers_give_the_same_cells_as_the_parent(tmp_path, restore_workers):
    root = make_store(tmp_path / "results", seeds=(0, 1), n=60)
    results = load_results(root)
    serial, parallel = _cells(results, 1), _cells(results, 2)
    assert serial.keys() == parallel.keys() and len(serial) >= 2
    diffs = 0
    for key, cell in serial.items():
        other = parallel[key]
        assert dataclasses.asdict(cell.estimate) == dataclasses.asdict(other.estimate)
        if cell.diff is not None:
            diffs += 1
            assert dataclasses.asdict(cell.diff) == dataclasses.asdict(other.diff)
        else:
            assert other.diff is None
    assert diffs >= 1  # the paired differences went through the pool too


def test_small_jobs_stay_in_the_parent(restore_workers):
    pool.set_workers(None)
    assert pool.worker_count(jobs=10, work=pool.PARALLEL_WORK / 10) == 1
    assert pool.worker_count(jobs=1, work=10 * pool.PARALLEL_WORK) == 1
    pool.set_workers(3)
    assert pool.worker_count(jobs=2, work=1.0) == 2  # an explicit count is honoured, up to the jobs


def test_map_jobs_keeps_the_order_of_the_jobs(restore_workers):
    pool.set_workers(2)
    jobs = [(((3,),), {"fill_value": float(i)}) for i in range(5)]
    out = pool.map_jobs(np.full, jobs, costs=[1.0, 5.0, 2.0, 4.0, 3.0])  # submitted 1, 3, 4, 2, 0
    assert [float(a[0]) for a in out] == [0.0, 1.0, 2.0, 3.0, 4.0]
