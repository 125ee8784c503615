"""The method template: the base class's `loss` wraps `loss_rows`; the optional hooks' defaults."""

import pytest
import torch

from calbench.methods import METHODS, Method, create_method, method_version


class _Rows(Method):
    """Records what reaches loss_rows."""

    def __init__(self, num_classes, *, ignore_index=-100):
        super().__init__(num_classes, ignore_index)
        self.seen = None

    def loss_rows(self, logits, targets, features=None, ctx=None):
        self.seen = (logits, targets, features, ctx)
        return logits.sum()


def test_loss_flattens_drops_ignored_rows_upcasts_and_passes_ctx():
    m = _Rows(3)
    logits = torch.randn(2, 3, 2, 2, dtype=torch.bfloat16)
    labels = torch.randint(0, 3, (2, 2, 2))
    labels[0, 1, 1] = -100
    m.loss(logits, labels, ctx={"x": 1})
    rows, targets, features, ctx = m.seen
    assert rows.shape == (7, 3) and rows.dtype == torch.float32 and targets.shape == (7,)
    assert features is None and ctx == {"x": 1}
    want = logits.movedim(1, -1).reshape(-1, 3)[labels.reshape(-1) != -100].float()
    assert torch.equal(rows, want)


def test_an_empty_batch_never_reaches_loss_rows_and_keeps_the_graph():
    m = _Rows(3)
    logits = torch.randn(4, 3, requires_grad=True)
    loss = m.loss(logits, torch.full((4,), -100))
    assert m.seen is None and float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


def test_transform_batch_defaults_to_the_identity():
    x, y = torch.randn(4, 2), torch.arange(4)
    out = create_method("ce", 4).transform_batch(x, y, torch.Generator().manual_seed(0))
    assert out[0] is x and out[1] is y and out[2] is None


def test_class_counts_are_a_saved_buffer_when_declared():
    class Counted(_Rows):
        needs_class_counts = True

    m = Counted(3)
    m.set_class_counts(torch.tensor([5, 1, 2]))
    assert m.state_dict()["class_counts"].tolist() == [5.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="3 class counts"):
        m.set_class_counts(torch.tensor([1, 2]))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_positive_integer_version_and_knows_its_name(name):
    assert isinstance(method_version(name), int) and method_version(name) >= 1
    assert METHODS.get(name).name == name
