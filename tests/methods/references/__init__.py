"""Independent float64 numpy references of every method's formula (docs/methods.md), one module per
family, written without calbench code. The registry-wide tests (tests/methods/test_every_method.py)
compare each registered method with its reference and fail when a method has none.

    @reference("fl", cases=[{"gamma": 2.0}], reduces_to=[("ce", {"gamma": 0.0})])
    def focal(logits, targets, *, gamma, **_):
        ...

A reference receives the method's rows (N, K) float64 and (N,) int targets, with no ignored row,
and the method's full hyper-parameters (its defaults updated by the case; ignore_index left out),
and returns the batch mean as a float. It may also name any of these keyword arguments; the tests
then pass them:

    features      (N, D) float64: the penultimate features the method was given
    state         the method's state_dict() after the call, as float64 numpy arrays
    ctx           what the method's transform_batch returned (tensors as numpy arrays)
    class_counts  (K,) float64: the counts given to set_class_counts

`cases`: extra hyper-parameter settings tested beside the defaults. `reduces_to`: (other method,
hyper-parameters) pairs under which the method's loss must equal the other's exactly.
A new method is its file under calbench/methods/ plus its module here; nothing else changes.
"""

import importlib
import pkgutil

from .core import REFERENCES, Reference, reference

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "core":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["REFERENCES", "Reference", "reference"]
