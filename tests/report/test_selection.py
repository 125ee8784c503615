"""Selection on validation: one row per swept method, the configuration chosen from saved validation
predictions only (a store whose every test prediction is changed selects the same), the record beside
the store and in --csv, the constraint grammar, the recipe's `select:` key and `--posthoc best`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calbench.cli import cli
from calbench.errors import ConfigError
from calbench.metrics import compute_metrics
from calbench.report import compute_cells, load_results
from calbench.report.selection import (choose_configs, parse_constraint, parse_select, posthoc_request, restrict,
                                       select_configs, two_fold_score, Ref)
from calbench.report.tidy import read_predictions

from conftest import METHODS, make_store

SWEEP = METHODS + (("mbls", "mbls(margin=5)", {"margin": 5.0, "alpha": 0.1}),
                   ("cals-alm", "cals-alm(margin=5)", {"margin": 5.0, "penalty": "phr"}))
CELLS = (("digits", "mlp"), ("digits-lt", "mlp"))


@pytest.fixture
def sweep_store(store_factory):
    return store_factory(methods=SWEEP, datasets=CELLS)


def invoke(*args):
    return CliRunner().invoke(cli, ["report", *args])


def val_means(results, method, group, key):
    """label -> mean over seeds of `key` on each run's saved validation predictions, by hand."""
    out = {}
    for r in results.done:
        if r.method == method and r.group == group:
            arrays = read_predictions(r, ("val",))
            out.setdefault(r.method_label, []).append(
                compute_metrics(arrays["val_labels"], logits=arrays["val_logits"], keys=(key,))[key])
    return {label: float(np.mean(v)) for label, v in out.items()}


def test_one_row_per_swept_method_with_footnote(sweep_store):
    res = invoke("--results", str(sweep_store), "--bootstrap", "0", "--markdown")
    assert res.exit_code == 0, res.output
    rows = [line.split("|")[1].strip() for line in res.stdout.splitlines() if line.startswith("| ")][1:]
    assert rows == ["ce", "ls(alpha=0.05)", "mbls", "cals-alm"]
    results = load_results(sweep_store)
    for method in ("mbls", "cals-alm"):
        for dataset, backbone in CELLS:
            means = val_means(results, method, (dataset, backbone), "nll")
            winner = min(means, key=means.get)
            setting = "margin=" + winner.split("margin=")[1].split(",")[0].rstrip(")")
            assert f"- {method} on {dataset} / {backbone}: {setting} (val NLL {means[winner]:.3f};" in res.stdout


def test_all_configs_shows_every_row(sweep_store):
    res = invoke("--results", str(sweep_store), "--bootstrap", "0", "--markdown", "--all-configs")
    assert res.exit_code == 0, res.output
    rows = {line.split("|")[1].strip() for line in res.stdout.splitlines() if line.startswith("| ")}
    assert {label for _, label, _ in SWEEP} <= rows
    assert "every configuration is shown" in res.stdout


def test_selected_row_is_the_winners_test_cell(sweep_store):
    """The winner is the lowest mean validation NLL; its row holds exactly the winner's test cell."""
    results = load_results(sweep_store)
    raw = compute_cells(results, keys=("acc", "ece"), B=0)
    reduced, selection = select_configs(results)
    cells = compute_cells(reduced, keys=("acc", "ece"), B=0)
    assert {(c.method, c.group) for c in selection.cells} == {(m, g) for m in ("mbls", "cals-alm") for g in CELLS}
    for choice in selection.cells:
        means = val_means(results, choice.method, choice.group, "nll")
        assert choice.winner == min(means, key=means.get)
        assert {c.label: c.values["nll"] for c in choice.candidates} == pytest.approx(means, abs=1e-12)
        assert cells[(choice.method, choice.group)].estimate.point == raw[(choice.winner, choice.group)].estimate.point


def _perturb_test_predictions(store: Path, rng) -> None:
    """Replace every run's test logits by noise (and its metrics.json test blocks accordingly)."""
    for npz in store.glob("*/*/predictions.npz"):
        with np.load(npz) as data:
            arrays = dict(data)
        arrays["test_logits"] = rng.normal(scale=5.0, size=arrays["test_logits"].shape).astype(np.float32)
        np.savez(npz, **arrays)
        meta = npz.parent / "metrics.json"
        obj = json.loads(meta.read_text())
        obj["metrics"] = {"val": obj["metrics"]["val"],
                          "test": compute_metrics(arrays["test_labels"], logits=arrays["test_logits"])}
        meta.write_text(json.dumps(obj))


def test_selection_reads_validation_only(sweep_store):
    """Changing every test prediction of the store leaves the selection (and --posthoc best) identical."""
    before = load_results(sweep_store)
    record = choose_configs(before, {"by": "val.ece", "subject_to": "val.acc >= ce.val.acc - 5"}).record()
    plain = choose_configs(before).record()
    table_before, _ = _report(sweep_store)
    _perturb_test_predictions(sweep_store, np.random.default_rng(7))
    after = load_results(sweep_store)
    assert choose_configs(after, {"by": "val.ece", "subject_to": "val.acc >= ce.val.acc - 5"}).record() == record
    assert choose_configs(after).record() == plain
    table_after, _ = _report(sweep_store)
    assert table_after.cells[("mbls", CELLS[0])].estimate.point != table_before.cells[("mbls", CELLS[0])].estimate.point
    assert [n for n in table_after.notes if "record:" not in n] == [n for n in table_before.notes if "record:" not in n]


def _report(store, **kw):
    from calbench.commands.report import make_report

    return make_report(store, keys=("acc", "ece"), B=0, on_warning=lambda m: None, **kw)


def test_record_written_atomically_beside_recipe_json(sweep_store):
    res = invoke("--results", str(sweep_store), "--bootstrap", "0")
    assert res.exit_code == 0, res.output
    rdir = sweep_store / "quickstart"
    record = json.loads((rdir / "selection.json").read_text())
    assert not list(rdir.glob(".*.tmp"))
    assert record["criterion"] == {"by": "val.nll", "subject_to": None} and record["source"] == "default"
    assert len(record["cells"]) == 4
    for cell in record["cells"]:
        labels = [c["label"] for c in cell["candidates"]]
        assert cell["winner"] in labels and len(labels) == 2
        assert all(len(c["runs"]) == 2 and c["validation"]["nll"] > 0 for c in cell["candidates"])


def test_csv_marks_the_selection(sweep_store):
    import csv
    import io

    res = invoke("--results", str(sweep_store), "--csv", "--metrics", "ece")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    sel = [r for r in rows if r["split"] == "selection:val"]
    assert len(sel) == 2 * 2 * 2 * 2  # 2 methods x 2 configurations x 2 cells x 2 seeds
    assert {r["metric"] for r in sel} == {"nll"}
    record = json.loads((sweep_store / "quickstart" / "selection.json").read_text())
    winners = {(c["method"], c["dataset"]): c["winner"] for c in record["cells"]}
    for r in rows:
        if r["method"] in ("mbls", "cals-alm"):
            assert r["selected"] == ("yes" if winners[(r["method"], r["dataset"])] == r["method_label"] else "no")
            assert r["selection"] == "val.nll"
        else:
            assert r["selected"] == "" and r["selection"] == ""


def test_constraint_against_a_reference_method(sweep_store):
    """by val.ece subject to an accuracy floor relative to ce: the winner is the lowest val ECE among the
    configurations meeting the floor (hand-computed); an unmeetable floor falls back and says so."""
    results = load_results(sweep_store)
    group = CELLS[0]
    ece, acc = val_means(results, "mbls", group, "ece"), val_means(results, "mbls", group, "acc")
    ce_acc = val_means(results, "ce", group, "acc")["ce"]
    best_ece = min(ece, key=ece.get)
    other = next(label for label in ece if label != best_ece)
    assert acc[other] > acc[best_ece]  # the store's design: the floor below separates the two
    floor = (acc[best_ece] - ce_acc) * 100 + 1e-6  # just above the ECE-best configuration's accuracy
    assert _choice(results, f"val.acc >= ce.val.acc - 100", "mbls", group).winner == best_ece
    choice = _choice(results, f"val.acc >= ce.val.acc + {floor!r}", "mbls", group)
    assert choice.winner == other and not choice.note
    won = next(c for c in choice.candidates if c.label == choice.winner)
    assert won.constraint[0] == pytest.approx(acc[choice.winner] * 100)
    unmeetable = _choice(results, "val.acc >= ce.val.acc + 1000", "mbls", group)
    assert unmeetable.winner == best_ece and "no configuration satisfies" in unmeetable.note


def _choice(results, constraint, method, group):
    selection = choose_configs(results, {"by": "val.ece", "subject_to": constraint})
    return next(c for c in selection.cells if c.method == method and c.group == group)


def test_constraint_grammar_evaluates():
    c = parse_constraint("val.acc >= cals-alm.val.acc - 1.0 + .5")
    assert c.op == ">=" and c.refs() == [Ref(None, "acc"), Ref("cals-alm", "acc")]
    values = {None: 80.0, "cals-alm": 81.0}
    assert c.evaluate(lambda ref: values[ref.method]) == (80.0, 80.5, False)
    c = parse_constraint("-1 + val.ece < 2e-1 - -1")
    assert c.evaluate(lambda ref: 2.0) == (1.0, 1.2, True)


@pytest.mark.parametrize("text", ["__import__('os').system('true') > 1", "val.acc >=", "test.ece <= 1",
                                  "val.acc >= ce.val.acc * 2", "val.nope > 1", "val.acc > 1 > 0", "val.acc 1",
                                  "val.acc", "", "val.acc >= + + 1"])
def test_constraint_grammar_rejects(text):
    with pytest.raises(ConfigError) as err:
        parse_constraint(text, "select.subject_to")
    assert str(err.value).startswith("select.subject_to:") and "\n" not in str(err.value)


def test_parse_select_shapes():
    assert parse_select(None).to_json() == {"by": "val.nll", "subject_to": None}
    assert parse_select("val.ece").key == "ece"
    for bad in ({"by": "test.ece"}, {"by": "val.ece", "extra": 1}, ["val.ece"], {"by": "val.ecee"}):
        with pytest.raises(ConfigError):
            parse_select(bad)


def test_recipe_select_key_is_validated_and_reaches_recipe_json(tmp_path):
    from calbench.recipe import parse_recipe
    from calbench.runner.store import write_recipe_json

    raw = {"name": "sel", "datasets": ["digits"], "backbones": ["mlp"], "methods": ["ce", {"mbls": {"margin": [5, 10]}}],
           "select": {"by": "val.ece", "subject_to": "val.acc >= ce.val.acc - 1.0"}}
    recipe = parse_recipe(raw, "r.yaml")
    assert recipe.select == {"by": "val.ece", "subject_to": "val.acc >= ce.val.acc - 1.0"}
    path = write_recipe_json(tmp_path, recipe, [])
    assert json.loads(path.read_text())["select"] == recipe.select
    for select, key in (({"by": "val.ecee"}, "select.by"), ({"subject_to": "val.acc >= fl.val.acc"}, "select.subject_to"),
                        ({"subject_to": "val.acc >= open('x')"}, "select.subject_to"), ("test.ece", "select")):
        with pytest.raises(ConfigError) as err:
            parse_recipe(dict(raw, select=select), "r.yaml")
        assert str(err.value).startswith(f"r.yaml: {key}") and "\n" not in str(err.value)


def test_recipe_json_select_is_used_and_select_by_overrides(sweep_store):
    rj = sweep_store / "quickstart" / "recipe.json"
    rj.write_text(json.dumps(dict(json.loads(rj.read_text()), select={"by": "val.ece"})))
    res = invoke("--results", str(sweep_store), "--bootstrap", "0", "--markdown")
    assert res.exit_code == 0 and "lowest val.ece" in res.stdout and "(val ECE " in res.stdout
    res = invoke("--results", str(sweep_store), "--bootstrap", "0", "--markdown", "--select-by", "val.acc")
    assert res.exit_code == 0 and "highest val.acc" in res.stdout
    res = invoke("--results", str(sweep_store), "--select-by", "test.ece")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "validation" in res.stderr


def test_unswept_store_is_unchanged(store):
    results = load_results(store)
    reduced, selection = select_configs(results)
    assert not selection.cells and reduced is results and selection.notes() == []
    assert not (store / "quickstart" / "selection.json").exists()


def test_failed_configuration_is_a_candidate_without_value(store_factory):
    root = store_factory(methods=SWEEP, datasets=CELLS[:1], failed={("mbls(margin=5)", "digits", 0),
                                                                    ("mbls(margin=5)", "digits", 1)})
    results = load_results(root)
    reduced, selection = select_configs(results)
    (choice,) = [c for c in selection.cells if c.method == "mbls"]
    assert choice.winner == "mbls(margin=10)"
    assert {c.label: c.values is None for c in choice.candidates} == {"mbls(margin=10)": False, "mbls(margin=5)": True}
    assert {r.method_label for r in reduced.runs if r.method == "mbls"} == {"mbls"}
    assert not [r for r in reduced.runs if r.method == "mbls" and not r.done]


def test_posthoc_best_chooses_on_a_two_fold_validation_split(sweep_store):
    from calbench.posthoc import calibrated_scores, create_calibrator
    from calbench.report.selection import _split_halves

    table, results = _report(sweep_store, posthoc="best")
    assert all(row.endswith(" + best") for row in table.rows)
    specs, candidates = posthoc_request("best")
    from calbench.posthoc import POSTHOC

    assert specs == [] and [c.label for c in candidates] == POSTHOC.names()  # alone: every calibrator
    run = results.done[0]
    arrays = read_predictions(run, ("val",))
    a, b = _split_halves(run, arrays["val_labels"].shape[0])
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(arrays["val_labels"].shape[0]))
    by_hand = []
    for fit, held in ((a, b), (b, a)):
        cal = create_calibrator("ts").fit(arrays["val_logits"][fit], arrays["val_labels"][fit])
        out, kind = calibrated_scores(cal, arrays["val_logits"][held])
        by_hand.append(compute_metrics(arrays["val_labels"][held], **{kind: out}, keys=("nll",))["nll"])
    assert two_fold_score(run, candidates[0], "nll") == pytest.approx(np.mean(by_hand), abs=1e-12)
    note = next(n for n in table.notes if n.startswith("post-hoc best"))
    assert "2-fold" in note and "ce on digits / mlp: " in note
    record = json.loads((sweep_store / "quickstart" / "selection.json").read_text())
    for choice in record["posthoc_best"]:
        scores = choice["scores"]
        assert choice["winner"] == min(scores, key=scores.get)
        cell = (choice["row"], (choice["dataset"], choice["backbone"]))
        direct = compute_cells(restrict(results, choose_configs(results)), keys=("acc", "ece"), B=0,
                               posthoc=choice["winner"])
        assert table.cells[(f"{choice['row']} + best", cell[1])].estimate.point == direct[cell].estimate.point


def test_posthoc_best_among_the_given_calibrators(sweep_store):
    specs, candidates = posthoc_request("vs,best")
    assert [s.label for s in specs] == ["vs"] and [c.label for c in candidates] == ["vs"]
    res = invoke("--results", str(sweep_store), "--bootstrap", "0", "--markdown", "--posthoc", "ts,best")
    assert res.exit_code == 0, res.output
    assert "| ce + ts |" in res.stdout and "| ce + best |" in res.stdout and ": ts" in res.stdout


def test_posthoc_best_uses_the_requested_interval_kind(sweep_store):
    from calbench.commands.report import make_report

    table, _ = make_report(sweep_store, keys=("acc", "ece"), B=20, on_warning=lambda m: None, posthoc="ts,best",
                           interval="basic")
    kinds = {label.split(" + ")[1]: cell.estimate.interval for (label, _), cell in table.cells.items()}
    assert kinds == {"ts": "basic", "best": "basic"}
