"""CPC's binary exclusion term: the blocked value-and-gradient pass equals plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from calbench.methods import create_method
from calbench.methods.penalties import _PairSum


def plain_cpc(logits, labels, w_bd, w_be):
    """The docs/methods.md expression through autograd, with the whole (N, K, K) pair tensor."""
    n, k = logits.shape
    hot = F.one_hot(labels, k).bool()
    l_y = logits.gather(1, labels.unsqueeze(1))
    bd = -F.logsigmoid(l_y - logits).masked_fill(hot, 0.0).sum() / (n * (k - 1))
    pair = F.logsigmoid(logits.unsqueeze(2) - logits.unsqueeze(1))
    mask = torch.eye(k, dtype=torch.bool).unsqueeze(0) | hot.unsqueeze(2) | hot.unsqueeze(1)
    be = -0.5 * pair.masked_fill(mask, 0.0).sum() / (n * (k - 1) * (k - 2))
    return F.cross_entropy(logits, labels) + w_bd * bd + w_be * be


@pytest.mark.parametrize("k, block", [(3, 1 << 22), (17, 300), (50, 10), (200, 1 << 22)])
def test_blocked_pair_sum_equals_autograd(k, block, monkeypatch):
    monkeypatch.setattr(_PairSum, "BLOCK", block)        # 300 / 10: blocks of 1 row, many blocks
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(23, k, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, k, (23,), generator=g)
    method = create_method("cpc", k, w_bd=0.7, w_be=2.5)
    x = logits.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(method.loss(x, labels), x)
    y = logits.clone().requires_grad_(True)
    want_loss = plain_cpc(y, labels, 0.7, 2.5)
    (want,) = torch.autograd.grad(want_loss, y)
    assert float(method.loss(logits, labels)) == pytest.approx(float(want_loss.detach()), rel=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
