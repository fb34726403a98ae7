"""Fixtures of the quantization tests: a tiny data split for quick fine-tuning runs."""

from __future__ import annotations

import pytest

from crosslayer.data import DataSplits


@pytest.fixture(scope="session")
def mnist_tiny(mnist_small: DataSplits) -> DataSplits:
    """1,000 train / 1,000 validation / 1,000 test images (fast calibration and one-epoch QAT)."""
    return DataSplits(train=mnist_small.train.subset(1000), val=mnist_small.val,
                      test=mnist_small.test.subset(1000))
