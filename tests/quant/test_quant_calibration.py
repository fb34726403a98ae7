"""Swapping layers, calibrating activation ranges, and the errors around them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.errors import StageError
from crosslayer.quant import (
    CalibrationConfig,
    FixedPointSpec,
    QuantConv2d,
    QuantLinear,
    calibrate,
    iter_quant_layers,
    quantize_model,
    weight_codes,
)

W8 = FixedPointSpec(bits=8, per_channel=True)
A8 = FixedPointSpec(bits=8)


def test_quantize_model_swaps_every_layer_and_keeps_outputs(lenet5_trained: nn.Module,
    mnist_small: DataSplits) -> None:
    x = mnist_small.test.images[:64]
    ref = lenet5_trained(x)
    quantize_model(lenet5_trained, W8, None)
    kinds = {n: type(m) for n, m in iter_quant_layers(lenet5_trained)}
    assert kinds == {"conv1": QuantConv2d, "conv2": QuantConv2d, "fc1": QuantLinear, "fc2": QuantLinear}
    assert (lenet5_trained(x) - ref).abs().max() < 0.05 * ref.abs().max()


def test_unknown_layer_and_unquantized_layer_errors(lenet5_trained: nn.Module) -> None:
    with pytest.raises(StageError, match="no quantizable layer named 'fc9'.*conv1"):
        quantize_model(lenet5_trained, W8, A8, layers=["fc9"])
    quantize_model(lenet5_trained, W8, A8, layers=["fc1"])
    assert weight_codes(lenet5_trained, "fc1").codes.dtype == torch.int32
    with pytest.raises(StageError, match="'conv1' has no integer codes"):
        weight_codes(lenet5_trained, "conv1")
    with pytest.raises(StageError, match="no layer named 'nope'"):
        weight_codes(lenet5_trained, "nope")


def test_calibration_without_data_is_an_error(lenet5_trained: nn.Module) -> None:
    quantize_model(lenet5_trained, W8, A8)
    with pytest.raises(StageError, match="calibration needs data: got 0 calibration images"):
        calibrate(lenet5_trained, torch.empty(0, 1, 28, 28))


def test_calibration_ranges_and_unsigned_inputs(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    quantize_model(lenet5_trained, W8, A8)
    imgs = mnist_small.train.images
    ranges = calibrate(lenet5_trained, imgs, CalibrationConfig(batches=2, batch_size=64), seed=3)
    assert ranges["conv1"] == (0.0, 1.0)  # MNIST pixels in [0, 1]
    assert ranges["fc2"][0] == 0.0  # after ReLU
    assert ranges["conv2"][0] < 0.0  # LeNet-5 has no ReLU after conv1
    specs = {n: m.act_spec for n, m in iter_quant_layers(lenet5_trained)}
    assert specs["conv1"] is not None and specs["conv1"].signed is False
    assert specs["conv2"] is not None and specs["conv2"].signed is True
    again = calibrate(lenet5_trained, imgs, CalibrationConfig(batches=2, batch_size=64), seed=3)
    assert again == ranges


@pytest.mark.parametrize("method", ["percentile", "mse"])
def test_clipping_methods_narrow_the_range(method: str, lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    quantize_model(lenet5_trained, W8, FixedPointSpec(bits=4))
    imgs = mnist_small.train.images
    mm = calibrate(lenet5_trained, imgs, CalibrationConfig(batches=2, batch_size=64), seed=0)
    cl = calibrate(lenet5_trained, imgs, CalibrationConfig(method=method, percentile=99.9, batches=2, batch_size=64,
                                                           max_samples=20_000),
    seed=0)
    assert cl["fc1"][1] < mm["fc1"][1]
    assert all(cl[n][0] >= mm[n][0] - 1e-6 and cl[n][1] <= mm[n][1] + 1e-6 for n in mm)


def test_layer_never_called_is_reported() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.unused = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    m = quantize_model(Skips(), W8, A8)
    with pytest.raises(StageError, match="'unused' saw no input"):
        calibrate(m, torch.randn(10, 4))
