"""Two-level intervals of the shift aggregates (calbench.report.shift.two_level): seeds drawn with
replacement, then one index resample per drawn copy shared by that seed's sets; checked against the
i.i.d. seed_bootstrap and against explicit resamples recomputed with compute_metrics."""

from __future__ import annotations

import numpy as np
import pytest

from calbench.metrics import compute_metrics, seed_bootstrap
from calbench.report.shift import SetPrediction, two_level
from calbench.shift.storage import compact_arrays, calibrated_sets, stored_rows

KEYS = ("acc", "ece", "nll")


def _pred(n, seed, severity=3, family="noise", k=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k)) * 1.5 + 2.0 * np.eye(k)[y]
    return SetPrediction(id=f"shift:{family}:{severity}", family=family, severity=severity, n=n, num_classes=k,
                         pred={"labels": y, "logits": z})


def test_one_set_per_seed_equals_seed_bootstrap():
    """With one set per seed the aggregate is the i.i.d. two-level bootstrap itself (same stream)."""
    runs = [[_pred(60 + 5 * s, s)] for s in range(3)]
    got = two_level(runs, KEYS, only="shift:noise:3", B=200, ci=0.9, seed=4)
    want = seed_bootstrap([r[0].pred for r in runs], B=200, seed=4, ci=0.9, keys=KEYS)
    for key in KEYS:
        mean, lo, hi, note = got[("3", key)]
        assert mean == pytest.approx(want["point"][key], abs=1e-12) and note == ""
        assert (lo, hi) == pytest.approx(want["ci"][key], abs=1e-12)


def _explicit(runs, B, seed, ci):
    """The same stream, every statistic recomputed on explicit resamples (mean over the run's sets)."""
    rng = np.random.default_rng(seed)
    S = len(runs)
    drawn = rng.integers(0, S, (B, S))
    sums = {k: np.zeros(B) for k in KEYS}
    for s, sets in enumerate(runs):
        owner = np.nonzero(drawn.ravel() == s)[0] // S
        idx = rng.integers(0, sets[0].n, (owner.shape[0], sets[0].n))
        for row, b in zip(idx, owner):
            values = [compute_metrics(p.pred["labels"][row], logits=p.pred["logits"][row], keys=KEYS) for p in sets]
            for k in KEYS:
                sums[k][b] += np.mean([v[k] for v in values])
    return {k: tuple(np.percentile(v / S, [50 * (1 - ci), 50 * (1 + ci)])) for k, v in sums.items()}


def test_corruption_means_resample_seeds_then_shared_sample_indices():
    runs = [[_pred(40, 10 * s + f, severity=3, family=f"c{f}") for f in range(3)] for s in range(2)]
    got = two_level(runs, KEYS, only=None, B=40, ci=0.95, seed=7)
    want = _explicit(runs, B=40, seed=7, ci=0.95)
    for key in KEYS:
        assert got[("3", key)][1:3] == pytest.approx(want[key], abs=1e-10)
        assert got[("all", key)][1:3] == pytest.approx(want[key], abs=1e-10)     # one severity: all = 3
        point = np.mean([np.mean([compute_metrics(p.pred["labels"], logits=p.pred["logits"], keys=KEYS)[key]
                                  for p in sets]) for sets in runs])
        assert got[("3", key)][0] == pytest.approx(point, abs=1e-12)
    lo, hi = got[("3", "ece")][1:3]
    assert lo < hi


def test_compact_rows_give_the_same_two_level_intervals():
    runs = [[_pred(50, 3 * s + f, family=f"c{f}") for f in range(2)] for s in range(2)]
    compact = []
    for sets in runs:
        rows = []
        for p in sets:
            arrays = compact_arrays(p.pred["labels"], calibrated_sets(p.pred["logits"], {}, 5), labelled=True)
            rows.append(SetPrediction(p.id, p.family, p.severity, p.n, 5,
                                      rows=stored_rows({**arrays, "labels": p.pred["labels"]}, "none"),
                                      points={"cece": 0.5}))
        compact.append(rows)
    full = two_level(runs, KEYS + ("cece",), only=None, B=30, ci=0.95, seed=1)
    rows = two_level(compact, KEYS + ("cece",), only=None, B=30, ci=0.95, seed=1)
    for key in KEYS:
        assert rows[("3", key)] == pytest.approx(full[("3", key)], abs=1e-10)
    assert rows[("3", "cece")][0] == 0.5 and rows[("3", "cece")][3] == "no interval: compact storage"
    assert np.isnan(rows[("3", "cece")][1]) and full[("3", "cece")][3] == ""
