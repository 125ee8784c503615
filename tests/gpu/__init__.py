"""Tests of calbench's CUDA paths (pytest -m cuda). Each CUDA test carries CUDA_ONLY (the `cuda`
marker and a skip with the reason when torch.cuda.is_available() is False), so CI, which has no
GPU, reports them as skipped rather than passed. (Not named tests/cuda: on a GPU machine a
top-level `cuda` package would shadow NVIDIA's cuda-python bindings that torch imports.)"""

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")
CUDA_ONLY = [pytest.mark.cuda, needs_cuda]
