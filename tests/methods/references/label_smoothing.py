"""Label smoothing: (1 - a)(-log p_y) + a mean_k(-log p_k)."""

import numpy as np

from .core import log_softmax, reference


@reference("ls", cases=[{"alpha": 0.1}, {"alpha": 0.5}], reduces_to=[("ce", {"alpha": 0.0})])
def ls(logits, targets, *, alpha, **_):
    lp = log_softmax(logits)
    n = len(targets)
    return ((1 - alpha) * -lp[np.arange(n), targets] + alpha * (-lp).mean(axis=1)).mean()
