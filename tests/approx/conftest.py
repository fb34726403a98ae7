"""Fixtures of the approximate-multiplier tests: an int8 LeNet-5 (symmetric signed codes) on real MNIST."""

from __future__ import annotations

import copy

import pytest
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import predict


def int8(model: nn.Module, data: DataSplits, *, act: FixedPointSpec | None = None) -> nn.Module:
    q = quantize_model(copy.deepcopy(model), FixedPointSpec(bits=8), act or FixedPointSpec(bits=8))
    with calibrating(q):
        predict(q, data.train.images[:500])
    return q.eval()


@pytest.fixture
def lenet5_int8(lenet5_trained: nn.Module, mnist_small: DataSplits) -> nn.Module:
    """The session LeNet-5 quantized to int8 weights and activations (per tensor, symmetric, signed)."""
    return int8(lenet5_trained, mnist_small)
