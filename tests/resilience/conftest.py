"""Fixtures of the resilience tests: a small fixed test subset and an 8-bit quantized LeNet-5."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model


@pytest.fixture
def subset(mnist_small: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 100 test images and labels."""
    return mnist_small.test.images[:100], mnist_small.test.labels[:100]


@pytest.fixture
def lenet5_int8(lenet5_trained: nn.Module, mnist_small: DataSplits) -> nn.Module:
    """The trained LeNet-5 with 8-bit weights (symmetric) and 8-bit calibrated input activations."""
    q = quantize_model(lenet5_trained, FixedPointSpec(bits=8), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(q), torch.no_grad():
        q(mnist_small.train.images[:500])
    return q.eval()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded torch: on the shared 2-core machine, two spinning threads per process thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
