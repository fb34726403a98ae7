"""Workload extraction on real MNIST inputs: shapes, MACs, measured sparsity and quantized bit widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.hw import evaluate_layer, load_accelerator
from crosslayer.hw.errors import MappingError
from crosslayer.hw.workload import extract_workload
from crosslayer.quant.fixed_point import FixedPointSpec
from crosslayer.quant.layers import calibrating, quantize_model


def test_lenet5_workload_shapes_and_macs(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    wl = extract_workload(lenet5_trained, mnist_small.test.images[:32])
    assert [s.name for s in wl] == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
    assert [s.kind for s in wl] == ["conv", "pool", "conv", "pool", "linear", "linear"]
    assert [s.macs for s in wl] == [20 * 24 * 24 * 25, 0, 50 * 8 * 8 * 20 * 25, 0, 800 * 500, 500 * 10]
    conv1 = wl[0]
    assert (conv1.out_h, conv1.out_w, conv1.weight_bits, conv1.act_bits) == (24, 24, 32, 32)
    # MNIST digits are mostly background: about 80 % of the input pixels are exactly zero
    assert 0.1 < conv1.act_density < 0.3
    assert wl[5].act_density < 0.9          # fc2 reads ReLU outputs
    assert conv1.weight_density == 1.0 and len(conv1.filter_nnz) == 20


def test_pruned_quantized_model_reports_bits_and_zeros(lenet5_trained: nn.Module, mnist_small: DataSplits) -> None:
    with torch.no_grad():
        for m in lenet5_trained.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                thr = m.weight.abs().flatten().kthvalue(int(0.75 * m.weight.numel())).values
                m.weight[m.weight.abs() <= thr] = 0.0
    quantize_model(lenet5_trained, FixedPointSpec(bits=8), FixedPointSpec(bits=8, signed=False, symmetric=False))
    with calibrating(lenet5_trained):
        lenet5_trained(mnist_small.train.images[:256])
    wl = extract_workload(lenet5_trained, mnist_small.test.images[:32])
    fc1 = next(s for s in wl if s.name == "fc1")
    assert (fc1.weight_bits, fc1.act_bits) == (8, 8)
    assert fc1.weight_density == pytest.approx(0.25, abs=0.01)
    assert sum(fc1.filter_nnz) == round(fc1.weight_density * fc1.weight_count)
    pool1 = next(s for s in wl if s.name == "pool1")
    assert pool1.act_bits == next(s for s in wl if s.name == "conv2").act_bits == 8   # the width of the layer fed


def test_pooling_moves_data_at_the_width_of_the_quantized_layer_it_feeds(lenet5_trained: nn.Module,
                                                                         mnist_small: DataSplits) -> None:
    float_wl = extract_workload(lenet5_trained, mnist_small.test.images[:8], float_bits=16)
    assert {s.name: s.act_bits for s in float_wl if s.kind == "pool"} == {"pool1": 16, "pool2": 16}
    act = {n: FixedPointSpec(bits=b, signed=False, symmetric=False)
           for n, b in {"conv1": 8, "conv2": 4, "fc1": 6, "fc2": 8}.items()}
    quantize_model(lenet5_trained, FixedPointSpec(bits=8), act)
    with calibrating(lenet5_trained):
        lenet5_trained(mnist_small.train.images[:256])
    wl = extract_workload(lenet5_trained, mnist_small.test.images[:8], float_bits=16)
    bits = {s.name: s.act_bits for s in wl}
    assert (bits["pool1"], bits["conv2"], bits["pool2"], bits["fc1"]) == (4, 4, 6, 6)
    eyeriss = load_accelerator("eyeriss")
    pool_energy = [evaluate_layer(next(s for s in w if s.name == "pool1"), eyeriss, "RS").total_energy
                   for w in (wl, float_wl)]
    assert pool_energy[0] < 0.5 * pool_energy[1]   # 4-bit instead of 16-bit activations moved


def test_depthwise_and_padded_conv_are_described() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 3))
    wl = extract_workload(net, torch.rand(2, 4, 6, 6), include_pooling=False)
    dw = wl[0]
    assert dw.kind == "dwconv" and dw.groups == 4 and (dw.out_h, dw.out_w) == (6, 6)
    assert dw.macs == 4 * 36 * 9
    assert wl[1].macs == 8 * 36 * 4


def test_model_without_layers_is_rejected() -> None:
    with pytest.raises(MappingError, match="no Conv2d, Linear or pooling layer"):
        extract_workload(nn.Sequential(nn.ReLU()), torch.rand(2, 3))
    with pytest.raises(MappingError, match="non-empty batch"):
        extract_workload(nn.Linear(3, 2), torch.rand(0, 3))


def test_unsupported_geometry_names_the_layer_field() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=(1, 2)))
    with pytest.raises(MappingError, match=r"0.stride = \(1, 2\)"):
        extract_workload(net, torch.rand(1, 1, 8, 8))
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2))
    with pytest.raises(MappingError, match="dilated convolutions are not modelled"):
        extract_workload(net, torch.rand(1, 1, 8, 8))


def test_float_layers_are_costed_at_the_accelerators_own_precision() -> None:
    from crosslayer.hw import load_accelerator
    from crosslayer.hw.analysis import analyse_model

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.rand(2, 1, 8, 8)
    for preset, bits in (("eyeriss", 16), ("tpu", 8)):
        acc = load_accelerator(preset)
        native = analyse_model(net, x, acc)
        assert {(s.weight_bits, s.act_bits) for s in native.workload} == {(bits, bits)}
        fp32 = analyse_model(net, x, acc, float_bits=32)
        assert {(s.weight_bits, s.act_bits) for s in fp32.workload} == {(32, 32)}
        # MAC energy grows with the product of the operand widths: fp32 costs (32 / bits)^2 on the MACs
        assert fp32.cost.breakdown("best")["mac"] == pytest.approx(native.cost.breakdown("best")["mac"]
                                                                  * (32 / bits) ** 2)


class _PoolThenResidual(nn.Module):
    """conv-BN-ReLU, an ``nn.MaxPool2d`` module, a residual block (add), a second pool, global pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.pool2(x), 1), 1))


def test_pooling_width_in_a_residual_model_with_batchnorm() -> None:
    torch.manual_seed(0)
    net = _PoolThenResidual().eval()
    act = {"stem.0": 8, "a": 5, "b": 6}   # the head stays float: the pool before it keeps the float width
    quantize_model(net, {n: FixedPointSpec(bits=8) for n in act},
                   {n: FixedPointSpec(bits=b, signed=False, symmetric=False) for n, b in act.items()}, layers=list(act))
    x = torch.rand(4, 1, 16, 16)
    with calibrating(net):
        net(x)
    bits = {s.name: s.act_bits for s in extract_workload(net, x, float_bits=16)}
    assert bits["pool"] == bits["a"] == 5        # feeds conv a (the residual branch's first conv)
    assert bits["pool2"] == bits["head"] == 16   # feeds the float linear layer
