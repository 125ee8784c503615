"""irm: parity with the authors' construction (one scikit-learn IsotonicRegression on every class
probability pooled, plus 1e-9 p), renormalised as the paper states; arg-max kept."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.isotonic import IsotonicRegression

from calbench.posthoc import fit_calibrator


def overconfident(n=2000, k=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.2
    return 2.5 * z, labels


def test_equals_pooled_scikit_learn_isotonic_renormalised():
    """The authors' `mir_calibrate` returns iso(p) + 1e-9 p unnormalised; calbench divides by the row sum."""
    val, val_labels = overconfident(seed=1)
    test, _ = overconfident(seed=2)
    p_val, p_test = softmax(val, axis=1), softmax(test, axis=1)
    onehot = np.eye(p_val.shape[1])[val_labels]
    iso = IsotonicRegression(out_of_bounds="clip").fit(p_val.ravel(), onehot.ravel())
    mapped = iso.predict(p_test.ravel()).reshape(p_test.shape) + 1e-9 * p_test
    out = fit_calibrator("irm", val, val_labels).transform(test)
    np.testing.assert_allclose(out, mapped / mapped.sum(1, keepdims=True), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.argmax(1), test.argmax(1))


def test_one_map_for_every_class():
    """A probability maps to the same value whatever its column: rows that are permutations of each
    other come out permuted the same way."""
    val, val_labels = overconfident(seed=3)
    irm = fit_calibrator("irm", val, val_labels)
    row = np.array([[3.0, 1.0, 0.0, -1.0, 2.0, 0.5]])
    perm = np.array([5, 3, 1, 0, 2, 4])
    np.testing.assert_allclose(irm.transform(row[:, perm]), irm.transform(row)[:, perm], atol=1e-15)
