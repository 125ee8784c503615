"""Every weighted (resampled) path against the explicit resample, with count rows whose totals are NOT n.

The bootstrap's rows sum to n, but BCa's jackknife rows do not (ones with zeros on the left-out
samples), and a fast path that assumed a total of n (or a fixed group size) would pass the plain
bootstrap tests and still be wrong there. Each metric of the registry is called with such rows
(parametrised by METRICS.names()) and compared with Resampler.explicit, which recomputes it on the
explicit multiset of each row, to 1e-9.
"""

import numpy as np
import pytest

from calbench.metrics import METRICS
from calbench.metrics.bootstrap import Resampler
from calbench.metrics.inputs import prepare

from .conftest import synth
from .references import context

KEYS = METRICS.names()


def uneven_rows(n: int, seed: int) -> np.ndarray:
    """Count rows of five kinds: a jackknife row (one sample left out), a grouped-jackknife row (a
    tenth left out), a bootstrap row drawn to 0.6 n, one to 1.3 n, and a row of counts 0..4."""
    rng = np.random.default_rng(seed)
    rows = np.ones((5, n))
    rows[0, rng.integers(n)] = 0.0
    rows[1, rng.permutation(n)[: n // 10]] = 0.0
    rows[2] = np.bincount(rng.integers(0, n, int(0.6 * n)), minlength=n)
    rows[3] = np.bincount(rng.integers(0, n, int(1.3 * n)), minlength=n)
    rows[4] = rng.integers(0, 5, n)
    assert len({float(t) for t in rows.sum(axis=1)} - {float(n)}) == 5
    return rows


def _check(key, logits, labels, k, seed):
    n = len(labels)
    rs = Resampler(prepare(labels, logits=logits), 15, (key,), **context(k))
    W = uneven_rows(n, seed)
    got = rs.stats(W)[key]
    want = rs.explicit(key, W)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("key", KEYS)
def test_weights_with_uneven_totals_equal_the_explicit_resample(key):
    logits, labels = synth(500, 6, seed=7)
    _check(key, logits, labels, 6, seed=1)


@pytest.mark.parametrize("key", KEYS)
def test_weights_with_uneven_totals_and_ties(key):
    logits, labels = synth(400, 4, seed=8, scale=1.5)
    _check(key, np.round(logits, 1), labels, 4, seed=2)  # tied confidences across group ends



@pytest.mark.parametrize("key", KEYS)
def test_weights_with_uneven_totals_on_a_larger_set(key):
    """Above the sizes where a weighted path switches method (sece's dense operator stops at 512)."""
    logits, labels = synth(1200, 3, seed=9)
    _check(key, logits, labels, 3, seed=3)
