"""The `@reference` decorator, the table it fills, and the numpy helpers the references share."""

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

EXTRAS = ("features", "state", "ctx", "class_counts")


@dataclass(frozen=True)
class Reference:
    name: str
    fn: Callable
    cases: tuple = ()
    reduces_to: tuple = ()
    extras: frozenset = field(default_factory=frozenset)   # which of EXTRAS fn names

    def __call__(self, logits, targets, hparams, **extras):
        wanted = {k: v for k, v in extras.items() if k in self.extras}
        params = {k: v for k, v in hparams.items() if k != "ignore_index"}
        return float(self.fn(np.asarray(logits, np.float64), np.asarray(targets), **params, **wanted))


REFERENCES: dict[str, Reference] = {}


def reference(name, cases=(), reduces_to=()):
    """Register `fn` as the reference formula of method `name` (see the package docstring)."""

    def add(fn):
        if name in REFERENCES:
            raise ValueError(f"two references for method '{name}'")
        names = set(inspect.signature(fn).parameters)
        REFERENCES[name] = Reference(name, fn, tuple(cases), tuple(reduces_to),
                                     frozenset(names & set(EXTRAS)))
        return fn

    return add


def softmax(l):
    e = np.exp(l - l.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(l):
    s = l - l.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def target_prob(l, y):
    return softmax(l)[np.arange(len(y)), y]


def cross_entropy(l, y):
    return -log_softmax(l)[np.arange(len(y)), y].mean()


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def distances(l):
    """d_ik = max_j l_ij - l_ik."""
    return l.max(axis=1, keepdims=True) - l
