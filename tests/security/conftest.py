"""Small fixed slices of the test set shared by the security tests."""

from __future__ import annotations

import pytest
import torch

from crosslayer.data import DataSplits


@pytest.fixture(scope="session")
def sec_batch(mnist_small: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 test images and labels."""
    return mnist_small.test.images[:64], mnist_small.test.labels[:64]
