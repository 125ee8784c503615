"""The post-hoc calibrator template: a map fitted on a run's validation predictions, applied to its test
predictions (conventions: docs/methods.md).

A calibrator is a pure function of saved predictions: `fit` sees only validation logits and labels
(as float64 numpy arrays), so calbench can refit any calibrator on any finished run at report time
without retraining. A subclass declares

    name              its registry name (set by `@POSTHOC.register`)
    version           bump it when a fix changes fitted results (part of the report cache key)
    output            "logits" or "probs": what `transform` returns (every metric accepts both)
    preserves_argmax  True when the calibrated prediction always has the input's arg-max

and implements `fit_arrays(logits, labels)`, `transform_array(logits)` and, for its fitted
parameters, `params()` / `load_params(params)`. Its hyper-parameters are the keyword-only
arguments of `__init__` with their defaults, stored as attributes of the same names.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from calbench.errors import ConfigError, InputError

OUTPUT_KINDS = ("logits", "probs")


def hparam_defaults(cls: type) -> dict[str, Any]:
    """The keyword-only `__init__` arguments of a calibrator class with their defaults."""
    params = inspect.signature(cls.__init__).parameters
    return {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def as_float64(array, what: str) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor (torch is not imported for numpy input)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64) if what != "labels" else np.asarray(array)


def fit_inputs(val_logits, val_labels) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float64 logits and (N,) int64 labels in range, or InputError naming what is wrong."""
    logits, labels = as_float64(val_logits, "logits"), as_float64(val_labels, "labels")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise InputError(f"calibrator fit: need logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise InputError(f"calibrator fit: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise InputError(f"calibrator fit: labels must lie in [0, {logits.shape[1]}), "
                         f"got {labels.min()}..{labels.max()}")
    if not np.all(np.isfinite(logits)):
        raise InputError("calibrator fit: validation logits hold NaN or infinite values")
    return logits, labels.astype(np.int64)


class Calibrator:
    """Base class of post-hoc calibrators; see the module docstring for what a subclass declares."""

    name: str = ""
    version: int = 1
    output: str = "logits"
    preserves_argmax: bool = False
    fitted: bool = False  # set by fit() / from_state()

    def __init__(self) -> None:
        """No hyper-parameters; a subclass lists its own as keyword-only arguments."""

    def hparams(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in hparam_defaults(type(self))}

    def fit(self, val_logits, val_labels) -> "Calibrator":
        """Fit on validation predictions only (numpy or torch; used as float64). Returns self."""
        self.fit_arrays(*fit_inputs(val_logits, val_labels))
        self.fitted = True
        return self

    def transform(self, logits):
        """Calibrated float64 logits or probabilities (per `output`) of (N, K) logits; a torch tensor
        comes back as a float64 tensor on its device, anything else as a numpy array."""
        if not self.fitted:
            raise RuntimeError(f"calibrator '{self.name}' used before fit")
        out = self.transform_array(as_float64(logits, "logits"))
        if hasattr(logits, "detach"):
            import torch

            return torch.as_tensor(out, device=logits.device)
        return out

    def state(self) -> dict[str, Any]:
        """JSON-able: name, version, output kind, hyper-parameters and fitted parameters."""
        return {"name": self.name, "version": self.version, "output": self.output, "hparams": self.hparams(),
                "params": self.params()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Calibrator":
        """The fitted calibrator `state()` described; ConfigError when it is another calibrator's or
        another version's state (its parameters may mean something else)."""
        if not isinstance(state, dict) or state.get("name") != cls.name or state.get("version") != cls.version:
            got = (state.get("name"), state.get("version")) if isinstance(state, dict) else state
            raise ConfigError(f"not a state of calibrator '{cls.name}' version {cls.version}: {got!r}")
        calibrator = cls(**dict(state.get("hparams") or {}))
        calibrator.load_params(dict(state.get("params") or {}))
        calibrator.fitted = True
        return calibrator

    # --- what a subclass implements ---------------------------------------------------------
    def fit_arrays(self, logits: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def transform_array(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError


def calibrated_scores(calibrator: Calibrator, logits) -> tuple[np.ndarray, str]:
    """(scores, kind) of test logits after `calibrator`, exactly as the engine scores them: the
    transform in float64, then logits rounded to float32 (the precision of saved predictions, so a
    refit at report time reproduces the stored blocks bit for bit); probabilities stay float64
    (rounding would break their row sums). kind is "logits" or "probs", the keyword of
    `calbench.metrics.compute_metrics`."""
    out = np.asarray(calibrator.transform(as_float64(logits, "logits")))
    if calibrator.output == "logits":
        return out.astype(np.float32), "logits"
    return out, "probs"
