"""The quantization verb: PTQ accuracy, per-layer widths, binary / ternary codes, pruned zeros through QAT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.config import from_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.quant import QuantizeConfig, iter_quant_layers, quantize, weight_codes
from crosslayer.train import evaluate


def test_ptq8_loses_almost_nothing(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    base = evaluate(lenet5_trained, mnist_small.test).accuracy
    q = quantize(lenet5_trained, QuantizeConfig(), mnist_small, seed=0).model
    acc = evaluate(q, mnist_small.test).accuracy
    assert abs(base - acc) <= 0.003  # 2,000 test images: at most 6 flips
    assert isinstance(lenet5_trained.conv1, nn.Conv2d) and not list(iter_quant_layers(lenet5_trained))
    codes = weight_codes(q, "fc1").codes
    assert int(codes.max()) <= 127 and int(codes.min()) >= -128


def test_ptq_is_deterministic(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    cfg = QuantizeConfig(weight_bits=5, act_bits=5, calibration="percentile")
    a = quantize(lenet300_trained, cfg, mnist_tiny, seed=7)
    b = quantize(lenet300_trained, cfg, mnist_tiny, seed=7)
    assert a.act_ranges == b.act_ranges
    x = mnist_tiny.test.images[:50]
    assert torch.equal(a.model(x), b.model(x))


def test_per_layer_widths_and_float_activations(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    cfg = QuantizeConfig(weight_bits=8, act_bits=0, layer_weight_bits={"fc1": 3}, layer_act_bits={"fc3": 6})
    q = quantize(lenet300_trained, cfg, mnist_tiny).model
    specs = {n: (m.weight_spec, m.act_spec) for n, m in iter_quant_layers(q)}
    assert specs["fc1"][0] is not None and specs["fc1"][0].bits == 3 and specs["fc1"][1] is None
    assert specs["fc2"][0] is not None and specs["fc2"][0].bits == 8
    assert specs["fc3"][1] is not None and specs["fc3"][1].bits == 6
    assert int(weight_codes(q, "fc1").codes.abs().max()) <= 4
    with pytest.raises(StageError, match="layer_weight_bits: no quantizable layer named 'fc7'"):
        quantize(lenet300_trained, QuantizeConfig(layer_weight_bits={"fc7": 4}), mnist_tiny)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"weight_bits = 17 is out of range; allowed \[1, 16\]"):
        QuantizeConfig(weight_bits=17)
    with pytest.raises(ConfigError, match="mode = 'quad' is not allowed"):
        from_mapping(QuantizeConfig, {"mode": "quad"}, section="quantize")
    with pytest.raises(ConfigError, match="weight_bits = 1 needs mode = 'binary'"):
        QuantizeConfig(weight_bits=1)
    with pytest.raises(ConfigError, match="act_bits"):
        QuantizeConfig(act_bits=1)


@pytest.mark.parametrize(("mode", "levels"), [("binary", {-1, 1}), ("ternary", {-1, 0, 1})])
def test_binary_and_ternary_codes(mode: str, levels: set[int], lenet300_trained: nn.Module,
                                  mnist_tiny: DataSplits) -> None:
    q = quantize(lenet300_trained, QuantizeConfig(mode=mode, qat_epochs=0), mnist_tiny).model
    for name in ("fc1", "fc2", "fc3"):
        qt = weight_codes(q, name)
        assert set(qt.codes.unique().tolist()) <= levels
        assert torch.equal(qt.zero_point, torch.zeros_like(qt.zero_point))
    assert evaluate(q, mnist_tiny.test).accuracy > 0.5


def test_pruned_zeros_stay_zero_through_qat(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    with torch.no_grad():
        for m in (lenet300_trained.fc1, lenet300_trained.fc2):
            w = m.weight
            w.mul_(w.abs() > w.abs().flatten().kthvalue(int(0.8 * w.numel())).values)
    zeros = {n: (getattr(lenet300_trained, n).weight == 0).clone() for n in ("fc1", "fc2")}
    small = DataSplits(train=mnist_tiny.train.subset(300), val=mnist_tiny.val.subset(300),
                       test=mnist_tiny.test.subset(500))
    for mode in ("qat", "ternary", "binary"):
        cfg = QuantizeConfig(mode=mode, weight_bits=4, act_bits=6, qat_epochs=1, qat_lr=1e-3, calib_batches=2)
        out = quantize(lenet300_trained, cfg, small, seed=0)
        assert out.training is not None and out.masked_layers == ["fc1.weight", "fc2.weight"]
        for n, z in zeros.items():
            layer = getattr(out.model, n)
            assert torch.all(layer.weight[z] == 0), mode
            assert torch.all(weight_codes(out.model, n).codes[z] == 0), mode
        assert evaluate(out.model, small.test).accuracy > 0.6


def test_qm_n_weights_use_power_of_two_scale(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    cfg = QuantizeConfig(weight_bits=8, weight_frac_bits=7, act_bits=0)
    q = quantize(lenet300_trained, cfg, mnist_tiny).model
    qt = weight_codes(q, "fc2")
    assert torch.all(qt.scale == 2.0**-7) and qt.spec.int_bits == 0
    w = lenet300_trained.fc2.weight.detach()
    expected = torch.clamp(torch.round(w * 128), -128, 127).to(torch.int32)
    assert torch.equal(qt.codes, expected)


def test_measurement_function_reports_loss_in_pp(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    from crosslayer.quant.measure import MeasureConfig, quant_measurements

    res = quant_measurements(lenet300_trained, mnist_tiny, cfg=MeasureConfig(which=("ptq8",)))
    assert res["ptq8_accuracy_loss_pp"] == pytest.approx(100 * (res["baseline_accuracy"] - res["ptq8_accuracy"]))
    assert abs(res["ptq8_accuracy_loss_pp"]) <= 0.5
    assert 3.5 < res["ptq8_compression_ratio"] < 4.0
    assert res["ptq8_settings"]["weight_bits"] == 8 and "qat4_accuracy" not in res
    with pytest.raises(ConfigError, match="which contains 'int3'"):
        MeasureConfig(which=("int3",))
