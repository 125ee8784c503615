"""The vectorised bootstrap equals each metric recomputed on the explicit resample; interval properties."""

import numpy as np
import pytest

from calbench.metrics import bootstrap_indices, bootstrap_metrics, compute_metrics, paired_bootstrap
from calbench.metrics import bootstrap as bootstrap_module

from .conftest import softmax, synth


def _check_against_explicit(labels, res, rows, idx, **pred):
    for j in rows:
        want = compute_metrics(labels[idx[j]], **{k: v[idx[j]] for k, v in pred.items()})
        for key, value in want.items():
            assert res["samples"][key][j] == pytest.approx(value, abs=1e-9), (key, j)


@pytest.mark.parametrize("scale", [3.0, 0.7])
def test_vectorised_equals_explicit_resamples(monkeypatch, scale):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 3000)  # several index blocks
    logits, labels = synth(700, 7, seed=1, scale=scale)
    logits = np.round(logits, 1)  # ties in confidence
    res = bootstrap_metrics(labels, logits=logits, B=12, seed=3)
    idx = bootstrap_indices(700, 12, 3)
    _check_against_explicit(labels, res, [0, 5, 11], idx, logits=logits)
    assert res["point"] == compute_metrics(labels, logits=logits)


def test_vectorised_probs_with_zeros_and_segmentation():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(300, 4)) * 4)
    probs[:50, 3] = 0.0
    probs[:50] /= probs[:50].sum(1, keepdims=True)
    labels = rng.integers(0, 4, 300)
    res = bootstrap_metrics(labels, probs=probs, B=5, seed=0)
    _check_against_explicit(labels, res, range(5), bootstrap_indices(300, 5, 0), probs=probs)

    seg = rng.normal(size=(2, 3, 8, 8)) * 2
    seg_labels = rng.integers(0, 3, (2, 8, 8))
    seg_labels[0, :2] = 255
    res = bootstrap_metrics(seg_labels, logits=seg, B=4, seed=1, ignore_index=255)
    rows = np.moveaxis(seg, 1, -1).reshape(-1, 3)
    flat = seg_labels.reshape(-1)
    keep = flat != 255
    assert "miou" in res["samples"]
    _check_against_explicit(flat[keep], res, range(4), bootstrap_indices(int(keep.sum()), 4, 1),
                            logits=rows[keep])


def test_index_blocks_reproduce_the_full_draw(monkeypatch):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 250)
    blocks = list(bootstrap_module._index_blocks(100, 9, 7))
    assert len(blocks) == 5  # 2 rows per block
    assert (np.concatenate(blocks) == bootstrap_indices(100, 9, 7)).all()


def test_intervals_contain_point_narrow_with_n_and_repeat():
    logits, labels = synth(8000, 10, seed=0)
    small = bootstrap_metrics(labels[:800], logits=logits[:800], B=200, seed=0)
    large = bootstrap_metrics(labels, logits=logits, B=200, seed=0)
    again = bootstrap_metrics(labels, logits=logits, B=200, seed=0)
    other = bootstrap_metrics(labels, logits=logits, B=200, seed=1)
    for key, (lo, hi) in large["ci"].items():
        assert lo <= large["point"][key] <= hi, key
        s_lo, s_hi = small["ci"][key]
        assert hi - lo < s_hi - s_lo, key
        assert again["ci"][key] == (lo, hi)
        assert (again["samples"][key] == large["samples"][key]).all()
        assert other["ci"][key] != (lo, hi)
        assert large["samples"][key].shape == (200,)


def test_paired_bootstrap_uses_the_same_indices():
    logits, labels = synth(1500, 5, seed=2)
    res = paired_bootstrap(labels, logits_a=logits, logits_b=logits / 2, B=50, seed=4)
    a = bootstrap_metrics(labels, logits=logits, B=50, seed=4)
    b = bootstrap_metrics(labels, logits=logits / 2, B=50, seed=4)
    for key in res["point"]:
        assert res["point"][key] == pytest.approx(a["point"][key] - b["point"][key], abs=1e-12)
        assert np.allclose(res["samples"][key], a["samples"][key] - b["samples"][key], atol=1e-12)
        lo, hi = res["ci"][key]
        assert lo <= hi
    same = paired_bootstrap(labels, logits_a=logits, logits_b=logits, B=20, seed=0)
    assert all(v == (0.0, 0.0) for v in same["ci"].values())
    # over-confident a vs tempered b: nll difference interval excludes 0
    assert res["ci"]["nll"][0] > 0


def test_bad_bootstrap_arguments():
    from calbench.errors import InputError

    logits, labels = synth(50, 3)
    with pytest.raises(InputError):
        bootstrap_metrics(labels, logits=logits, B=0)
    with pytest.raises(InputError):
        bootstrap_metrics(labels, logits=logits, ci=1.5)
    with pytest.raises(InputError, match="shape mismatch"):
        paired_bootstrap(labels, logits_a=logits, logits_b=np.hstack([logits, logits[:, :1]]))


def test_vectorised_smooth_metrics_on_calibrated_data():
    """smece's bisection goes below bandwidth 0.01 here (finer grids): still equal to the explicit resample."""
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    labels = (rng.random(20000) >= conf).astype(int)
    probs = np.stack([conf, 1 - conf], 1)
    keys = ("smece", "sece", "aece", "ece")
    res = bootstrap_metrics(labels, probs=probs, B=3, seed=0, keys=keys)
    idx = bootstrap_indices(20000, 3, 0)
    for j in range(3):
        want = compute_metrics(labels[idx[j]], probs=probs[idx[j]], keys=keys)
        for key in keys:
            assert res["samples"][key][j] == pytest.approx(want[key], abs=1e-9), key


def test_seed_bootstrap_equals_explicit_two_level_resampling():
    from calbench.metrics import seed_bootstrap

    runs = []
    for s, n in enumerate((300, 300, 250)):
        logits, labels = synth(n, 4, seed=10 + s)
        runs.append({"logits": logits, "labels": labels})
    res = seed_bootstrap(runs, B=6, seed=5)
    rng = np.random.default_rng(5)
    drawn = rng.integers(0, 3, (6, 3))
    copies = {s: [] for s in range(3)}
    for s in range(3):
        for flat in np.nonzero(drawn.ravel() == s)[0]:
            idx = rng.integers(0, len(runs[s]["labels"]), len(runs[s]["labels"]))
            m = compute_metrics(runs[s]["labels"][idx], logits=runs[s]["logits"][idx])
            copies[s].append((flat // 3, m))
    want = {k: np.zeros(6) for k in res["point"]}
    for s in range(3):
        for b, m in copies[s]:
            for k in want:
                want[k][b] += m[k] / 3
    for k in want:
        assert np.allclose(res["samples"][k], want[k], atol=1e-9), k
    points = [compute_metrics(r["labels"], logits=r["logits"]) for r in runs]
    assert res["point"]["ece"] == pytest.approx(np.mean([p["ece"] for p in points]))


def test_resamples_are_evaluated_in_blocks_not_one_by_one(monkeypatch):
    calls = []
    original = bootstrap_module.Resampler.stats

    def counting(self, W):
        calls.append(W.shape[0])
        return original(self, W)

    monkeypatch.setattr(bootstrap_module.Resampler, "stats", counting)
    logits, labels = synth(5000, 4)
    bootstrap_metrics(labels, logits=logits, B=1000, seed=0)
    assert sum(calls) == 1000 and calls == [16, 496, 488]  # 2.5M / 5000 = 500 rows, whole lane groups of 16


def test_every_point_estimate_equals_compute_metrics_exactly():
    """The Resampler takes its point estimates on the sorted samples (tace from the bootstrap's class
    orders); every registered metric must still give compute_metrics' number bit for bit."""
    from calbench.metrics import METRICS

    logits, labels = synth(900, 9, seed=6)
    logits = np.round(logits, 1)  # ties in confidence and in the class probabilities
    counts = np.array([300, 150, 90, 60, 30, 15, 8, 4, 2])
    keys = tuple(METRICS.names())
    res = bootstrap_metrics(labels, logits=logits, B=3, keys=keys, class_counts=counts)
    want = compute_metrics(labels, logits=logits, keys=keys, class_counts=counts)
    assert res["point"] == want
    probs = softmax(logits)
    res = bootstrap_metrics(labels, probs=probs, B=3, keys=keys, class_counts=counts)
    assert res["point"] == compute_metrics(labels, probs=probs, keys=keys, class_counts=counts)


def test_blocks_hold_whole_lane_groups_and_reproduce_the_full_draw(monkeypatch):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 50 * 100)  # 50 rows, rounded to 48
    blocks = list(bootstrap_module._index_blocks(100, 100, 7))
    assert [len(b) for b in blocks] == bootstrap_module.block_sizes(100, 100) == [16, 48, 36]  # one lane group first
    assert (np.concatenate(blocks) == bootstrap_indices(100, 100, 7)).all()
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 10 * 100)  # fewer rows than a lane group: kept
    assert bootstrap_module.block_rows(100) == 10
