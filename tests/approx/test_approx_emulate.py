"""Approximate emulation: bit-exact against the integer reference, exact = int8 model, AxNN gradients, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from crosslayer.approx import (
    ApproxLayer,
    IntegerReference,
    Multiplier,
    approximate_model,
    assignment_of,
    finetune,
    integer_accumulate,
    integer_reference_model,
    reference_accumulate,
)
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.quant import FixedPointSpec, calibrating, quantize_model
from crosslayer.train import TrainConfig, evaluate, predict

LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def test_lookup_accumulation_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randint(-70000, 70000, (256, 256), generator=g)
    w = torch.randint(-128, 128, (11, 300), generator=g)
    exact = (torch.arange(-128, 128)[:, None] * torch.arange(-128, 128)[None, :])
    for rows in (37, 400):  # per-MAC gathers (few rows) and the embedding-bag path (many rows)
        x = torch.randint(-128, 128, (rows, 300), generator=g)
        acc = integer_accumulate(x, w, table - exact, -128, -128)
        ref = reference_accumulate(x, w, table, -128, -128)
        assert acc.dtype == torch.float64 and torch.equal(acc.long(), ref)
    assert torch.equal(integer_accumulate(x, w, None, -128, -128).long(), x.long() @ w.long().t())


def _tiny_quant_conv(asym: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    act = FixedPointSpec(bits=8, symmetric=not asym, signed=not asym)
    q = quantize_model(net, FixedPointSpec(bits=8, per_channel=True), act)
    with calibrating(q):
        q(torch.randn(16, 3, 8, 8))
    return q.eval()


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("name", ["exact", "drum4", "etm4", "ppp0_2"])
def test_layer_emulation_is_bit_exact(asym: bool, name: str) -> None:
    q = _tiny_quant_conv(asym)
    x = torch.randn(6, 3, 8, 8) * 2
    approx = approximate_model(q, {"0": name, "2": name})
    ref = integer_reference_model(q, {"0": name, "2": name})
    with torch.no_grad():
        out, want = approx(x), ref(x)
    assert torch.equal(out, want)
    if name == "exact":  # and close to the fake-quantized float model
        assert torch.allclose(out, q(x), atol=1e-4)


def test_exact_multiplier_reproduces_int8_lenet5(lenet5_int8: nn.Module, mnist_small: DataSplits) -> None:
    images = mnist_small.test.images[:100]
    emu = approximate_model(lenet5_int8, {n: "exact" for n in LAYERS})
    ref = integer_reference_model(lenet5_int8)
    got, want, fq = predict(emu, images), predict(ref, images), predict(lenet5_int8, images)
    assert torch.equal(got, want)  # bit-exact against the integer implementation
    assert (got.argmax(1) == fq.argmax(1)).float().mean() >= 0.99
    assert (got - fq).abs().max() < 0.1
    assert assignment_of(emu) == {n: {"name": "exact", "relative_power": 1.0} for n in LAYERS}


def test_approximate_lenet5_bit_exact_and_less_accurate(lenet5_int8: nn.Module, mnist_small: DataSplits) -> None:
    images = mnist_small.test.images[:40]
    harsh = {n: "trunc10" for n in LAYERS}
    got = predict(approximate_model(lenet5_int8, harsh), images)
    assert torch.equal(got, predict(integer_reference_model(lenet5_int8, harsh), images))
    test = mnist_small.test.subset(500)
    exact_acc = evaluate(approximate_model(lenet5_int8, {n: "exact" for n in LAYERS}), test).accuracy
    assert evaluate(approximate_model(lenet5_int8, harsh), test).accuracy < exact_acc - 0.05


def test_training_mode_gradient_is_straight_through() -> None:
    q = _tiny_quant_conv(False)
    x = torch.randn(4, 3, 8, 8)
    layer = ApproxLayer(copy.deepcopy(q[0]), "etm4", "0").train()
    out = layer(x)
    out.sum().backward()
    fq = copy.deepcopy(q[0]).train()
    fq(x).sum().backward()
    assert layer.layer.weight.grad is not None and fq.weight.grad is not None
    assert torch.allclose(layer.layer.weight.grad, fq.weight.grad)
    with torch.no_grad():
        assert torch.equal(out, layer.eval()(x))  # the value is the approximate one


@pytest.mark.slow
def test_axnn_finetuning_recovers_accuracy(lenet5_int8: nn.Module, mnist_small: DataSplits) -> None:
    lenet5_int8.conv2.weight.data[:, :, 0, 0] = 0.0  # pruned weights must stay zero
    model = approximate_model(lenet5_int8, {n: "bam_h4_v8" for n in LAYERS})  # ~40 % before fine-tuning
    val = mnist_small.val.subset(300)
    before = evaluate(model, val).accuracy
    finetune(model, mnist_small.train.subset(640), val, TrainConfig(epochs=1, lr=5e-3, optimizer="adam",
                                                                    weight_decay=0.0), seed=0)
    after = evaluate(model.eval(), val).accuracy
    assert after > before + 0.2
    assert not model.conv2.layer.weight[:, :, 0, 0].any()


def test_errors_for_unquantized_and_wide_layers(lenet5_trained: nn.Module, lenet5_int8: nn.Module) -> None:
    with pytest.raises(StageError, match="has no integer codes: quantize the model first"):
        ApproxLayer(nn.Linear(3, 3), "exact", "fc")
    with pytest.raises(StageError, match="quantize the model first"):
        approximate_model(lenet5_trained, {"fc1": "drum4"})
    with pytest.raises(StageError, match="no quantized layer named 'fc9'"):
        approximate_model(lenet5_int8, {"fc9": "drum4"})
    wide = quantize_model(copy.deepcopy(lenet5_int8), FixedPointSpec(bits=12), FixedPointSpec(bits=8))
    with pytest.raises(StageError, match="12 bits"):
        approximate_model(wide, {"fc1": "drum4"})
    raw = quantize_model(copy.deepcopy(lenet5_trained), FixedPointSpec(bits=8), FixedPointSpec(bits=8))
    with pytest.raises(StageError, match="not calibrated"):
        approximate_model(raw, {"fc2": "exact"})(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ConfigError, match="unknown multiplier 'bogus'"):
        approximate_model(lenet5_int8, {"fc1": "bogus"})
    signed_only = Multiplier(name="s", table=np.zeros((256, 256), dtype=np.int64), signed=True)
    asym = quantize_model(copy.deepcopy(lenet5_int8), FixedPointSpec(bits=8),
                          FixedPointSpec(bits=8, signed=False, symmetric=False))
    with pytest.raises(ConfigError, match=r"\[-128, 127\]"):
        approximate_model(asym, {"fc1": signed_only})


def test_reference_rejects_plain_layers() -> None:
    with pytest.raises(StageError, match="no integer codes"):
        IntegerReference(nn.Linear(2, 2))
