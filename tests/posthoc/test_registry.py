"""Every registered calibrator honours the Calibrator contract; hyper-parameters are validated by name
and kind; a calibrator is one file (a class registered at import, found by create/fit and listing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from calbench.errors import ConfigError, UnknownNameError
from calbench.posthoc import (POSTHOC, Calibrator, calibrated_scores, calibrator_hparams, create_calibrator,
                              fit_calibrator)
from calbench.posthoc.base import OUTPUT_KINDS
from calbench.metrics import compute_metrics


def skewed(n=600, k=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 1.5
    return (3.0 * z + np.linspace(-1, 1, k)).astype(np.float32), labels


@pytest.mark.parametrize("name", POSTHOC.names())
def test_contract_of_every_calibrator(name):
    cls = POSTHOC.get(name)
    assert issubclass(cls, Calibrator) and cls.name == name and cls.output in OUTPUT_KINDS
    assert isinstance(cls.version, int) and isinstance(cls.preserves_argmax, bool)
    val, val_labels = skewed(seed=1)
    test, test_labels = skewed(seed=2)
    calibrator = fit_calibrator(name, val, val_labels)
    out = calibrator.transform(test)
    assert out.shape == test.shape and out.dtype == np.float64 and np.all(np.isfinite(out))
    if cls.output == "probs":
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-9)
    if cls.preserves_argmax:
        np.testing.assert_array_equal(out.argmax(1), test.argmax(1))
    # state is JSON-able and restores the same map
    state = json.loads(json.dumps(calibrator.state()))
    assert state["name"] == name and state["hparams"] == calibrator_hparams(name)
    np.testing.assert_array_equal(cls.from_state(state).transform(test), out)
    # every metric takes the calibrated scores, whatever their kind
    scores, kind = calibrated_scores(calibrator, test)
    assert kind == cls.output
    metrics = compute_metrics(test_labels, **{kind: scores})
    assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", POSTHOC.names())
def test_fit_reads_validation_only_and_is_deterministic(name):
    val, val_labels = skewed(seed=1)
    a = fit_calibrator(name, val, val_labels).state()
    assert fit_calibrator(name, val.copy(), val_labels.copy()).state() == a


def test_state_of_another_calibrator_or_version_is_refused():
    state = fit_calibrator("ts", *skewed()).state()
    with pytest.raises(ConfigError, match="not a state of calibrator 'vs'"):
        POSTHOC.get("vs").from_state(state)
    with pytest.raises(ConfigError, match="version"):
        POSTHOC.get("ts").from_state(dict(state, version=state["version"] + 1))


def test_unknown_calibrator_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'ts'"):
        fit_calibrator("tss", np.zeros((2, 2)), np.zeros(2, dtype=np.int64))


def test_unknown_hyper_parameter_names_the_key():
    with pytest.raises(ConfigError, match=r"ts: unknown hyper-parameter 'bins'; valid: none"):
        create_calibrator("ts", bins=10)


class _Toy(Calibrator):
    """A probability-output calibrator with two hyper-parameters: softmax(z / scale) mixed with uniform."""

    output = "probs"
    preserves_argmax = True

    def __init__(self, *, scale: float = 2.0, smoothing: bool = False):
        self.scale, self.smoothing = scale, smoothing

    def fit_arrays(self, logits, labels):
        self.k = logits.shape[1]

    def transform_array(self, logits):
        p = softmax(logits / self.scale, axis=1)
        return 0.9 * p + 0.1 / self.k if self.smoothing else p

    def params(self):
        return {"k": self.k}

    def load_params(self, params):
        self.k = params["k"]


@pytest.fixture
def toy():
    """A calibrator registered for one test, then removed (the registry is process-wide)."""
    POSTHOC.register("toy-probs", _Toy)
    yield "toy-probs"
    POSTHOC._entries.pop("toy-probs")


def test_hyper_parameters_are_checked_by_the_kind_of_their_default(toy):
    assert calibrator_hparams(toy) == {"scale": 2.0, "smoothing": False}
    assert create_calibrator(toy, scale=3).scale == 3.0
    with pytest.raises(ConfigError, match=r"toy-probs\.scale: expected a number, got 'big'"):
        create_calibrator(toy, scale="big")
    with pytest.raises(ConfigError, match=r"toy-probs\.smoothing: expected true or false, got 1"):
        create_calibrator(toy, smoothing=1)
    with pytest.raises(ConfigError, match=r"unknown hyper-parameter 'scal' \(did you mean 'scale'\?\)"):
        create_calibrator(toy, scal=1.0)
    with pytest.raises(ConfigError, match="finite"):
        create_calibrator(toy, scale=float("nan"))


def test_a_probability_calibrator_flows_into_every_metric(toy):
    val, val_labels = skewed(seed=1)
    test, test_labels = skewed(seed=2)
    calibrator = fit_calibrator(toy, val, val_labels, smoothing=True)
    scores, kind = calibrated_scores(calibrator, test)
    assert kind == "probs" and scores.dtype == np.float64
    assert compute_metrics(test_labels, probs=scores) == compute_metrics(test_labels, probs=calibrator.transform(test))


def test_registering_something_that_is_not_a_calibrator_fails_at_import_time():
    with pytest.raises(TypeError, match="Calibrator subclass"):
        POSTHOC.register("not-one", object)
    with pytest.raises(TypeError, match="output must be one of"):
        POSTHOC.register("bad-output", type("Bad", (Calibrator,), {"output": "labels"}))
    assert "not-one" not in POSTHOC and "bad-output" not in POSTHOC


def test_calibrated_logits_are_rounded_like_saved_predictions():
    """The engine scores float64 logits / T rounded to float32; calibrated_scores does the same."""
    val, val_labels = skewed(seed=1)
    ts = fit_calibrator("ts", val, val_labels)
    scores, kind = calibrated_scores(ts, val)
    assert kind == "logits" and scores.dtype == np.float32
    np.testing.assert_array_equal(scores, (val.astype(np.float64) / ts.temperature).astype(np.float32))
