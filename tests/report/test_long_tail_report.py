"""`calbench report --metrics acc-many,...` on runs that saved their train class counts: the shot
groups use each dataset's own thresholds (digits-lt: terciles; others: OLTR's), and the numbers
equal compute_metrics on the saved predictions with those counts."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.metrics import bootstrap_metrics, compute_metrics
from conftest import make_store

LONG_TAIL = ("acc-many", "acc-medium", "acc-few", "ece-many", "ece-medium", "ece-few")
COUNTS = np.array([500, 400, 300, 250, 200, 150, 120, 110, 105, 101])  # OLTR: all many; terciles: 3 / 4 / 3


def _add_counts(store, counts=COUNTS):
    for path in store.glob("*/*/predictions.npz"):
        with np.load(path) as data:
            arrays = dict(data)
        np.savez(path, **arrays, train_class_counts=counts)


@pytest.fixture
def lt_store(tmp_path):
    store = make_store(tmp_path, datasets=(("digits-lt", "mlp"), ("digits", "mlp")), seeds=(0, 1), n=300)
    _add_counts(store)
    return store


def _saved(store, dataset):
    runs = []
    for path in sorted(store.glob("*/*/predictions.npz")):
        config = (path.parent / "config.json").read_text()
        if f'"dataset": "{dataset}"' in config:
            with np.load(path) as data:
                runs.append((path.parent.name, data["test_labels"], data["test_logits"]))
    return runs


def test_point_values_use_the_dataset_thresholds(lt_store):
    from calbench.commands.report import make_report

    table, results = make_report(lt_store, keys=("acc",) + LONG_TAIL, B=0, on_warning=lambda m: None)
    for dataset, thresholds in (("digits-lt", "terciles"), ("digits", None)):
        by_id = {r.run_id: r for r in results.done if r.dataset == dataset}
        per_cell: dict = {}
        for run_id, labels, logits in _saved(lt_store, dataset):
            run = by_id[run_id]
            m = compute_metrics(labels, logits=logits, keys=LONG_TAIL, class_counts=COUNTS, shot_thresholds=thresholds)
            per_cell.setdefault(run.method_label, []).append(m)
        for label, ms in per_cell.items():
            point = table.cells[(label, (dataset, "mlp"))].estimate.point
            for key in LONG_TAIL:
                expect = np.mean([m[key] for m in ms])
                assert point[key] == pytest.approx(expect, abs=1e-12, nan_ok=True), (dataset, label, key)
    # the two rules give different groups on these counts (OLTR: every class many-shot, so no few-shot samples)
    labels, logits = _saved(lt_store, "digits")[0][1:]
    oltr = compute_metrics(labels, logits=logits, keys=("acc-few",), class_counts=COUNTS)
    tercile = compute_metrics(labels, logits=logits, keys=("acc-few",), class_counts=COUNTS, shot_thresholds="terciles")
    assert np.isnan(oltr["acc-few"]) and not np.isnan(tercile["acc-few"])


def test_single_seed_interval_is_the_metrics_bootstrap_with_the_counts(tmp_path):
    from calbench.commands.report import make_report

    store = make_store(tmp_path, datasets=(("digits-lt", "mlp"),), seeds=(0,), n=300)
    _add_counts(store)
    table, results = make_report(store, keys=LONG_TAIL, B=50, seed=3, on_warning=lambda m: None)
    run = results.done[0]
    with np.load(run.run_dir / "predictions.npz") as data:
        out = bootstrap_metrics(data["test_labels"], logits=data["test_logits"], B=50, seed=3, keys=LONG_TAIL,
                                class_counts=COUNTS, shot_thresholds="terciles")
    cell = table.cells[(run.method_label, ("digits-lt", "mlp"))].estimate
    for key in LONG_TAIL:
        assert cell.ci[key] == pytest.approx(out["ci"][key], abs=1e-12)


def test_runs_without_saved_counts_are_one_line(tmp_path):
    store = make_store(tmp_path, datasets=(("digits-lt", "mlp"),), seeds=(0,))
    res = CliRunner().invoke(cli, ["report", "--results", str(store), "--metrics", "acc-few", "--bootstrap", "0"])
    assert res.exit_code == 2
    assert "train class counts" in res.output and "Traceback" not in res.output


def test_a_run_saves_its_resolved_thresholds_and_the_report_uses_them(tmp_path):
    """digits-lt's terciles, resolved on the run's own counts at train time, are what the report
    reads; a saved pair that differs from the registry's rule wins (the store is the record)."""
    from calbench.commands.report import make_report
    from calbench.engine.train import long_tail_arrays

    saved = long_tail_arrays("digits-lt", COUNTS)
    lo, hi = np.quantile(COUNTS.astype(np.float64), [1 / 3, 2 / 3])
    assert saved["train_shot_thresholds"].tolist() == [lo, hi]
    assert long_tail_arrays("digits", COUNTS)["train_shot_thresholds"].tolist() == [20.0, 100.0]
    store = make_store(tmp_path, datasets=(("digits-lt", "mlp"),), seeds=(0,), n=300)
    odd = (130.0, 210.0)  # neither OLTR's nor the terciles of COUNTS
    for path in store.glob("*/*/predictions.npz"):
        with np.load(path) as data:
            arrays = dict(data)
        np.savez(path, **arrays, train_class_counts=COUNTS, train_shot_thresholds=np.array(odd))
    table, results = make_report(store, keys=LONG_TAIL, B=0, on_warning=lambda m: None)
    run = results.done[0]
    with np.load(run.run_dir / "predictions.npz") as data:
        expect = compute_metrics(data["test_labels"], logits=data["test_logits"], keys=LONG_TAIL,
                                 class_counts=COUNTS, shot_thresholds=odd)
        terciles = compute_metrics(data["test_labels"], logits=data["test_logits"], keys=LONG_TAIL,
                                   class_counts=COUNTS, shot_thresholds="terciles")
    point = table.cells[(run.method_label, ("digits-lt", "mlp"))].estimate.point
    assert any(expect[k] != pytest.approx(terciles[k], nan_ok=True) for k in LONG_TAIL)
    for key in LONG_TAIL:
        assert point[key] == pytest.approx(expect[key], abs=1e-12, nan_ok=True), key
