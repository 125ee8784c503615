"""Backbone tests run torch on one intra-op thread: on the 2-core CI machine, shared with other
test processes, two spinning OpenMP threads per process made forward/backward 10-100x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
