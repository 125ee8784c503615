"""Cross-entropy."""

from .core import cross_entropy, reference


@reference("ce")
def ce(logits, targets, **_):
    return cross_entropy(logits, targets)
