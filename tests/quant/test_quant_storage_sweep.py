"""Storage counted from the codes, and the bit-width sweep."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.data import DataSplits
from crosslayer.quant import FixedPointSpec, QuantizeConfig, bit_sweep, lowest_within_budget, quantize_model
from crosslayer.quant.storage import quantized_storage


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 40), nn.ReLU(), nn.Linear(40, 10))


def test_dense_storage_counts_codes_scales_and_fp32_biases() -> None:
    m = quantize_model(_net(), FixedPointSpec(bits=6, per_channel=True), None)
    st = quantized_storage(m)
    expected = 4000 * 6 + 40 * 32 + 400 * 6 + 10 * 32 + (40 + 10) * 32
    assert st.bits == expected
    assert st.dense_fp32_bits == 32 * (4000 + 40 + 400 + 10)
    assert st.compression_ratio == pytest.approx(st.dense_fp32_bits / expected)
    assert st.index_bits_total == 0


def test_sparse_layer_uses_relative_indices() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[:, 5:] = 0  # 95 % zeros in rows of 100: gaps of 96 need fillers at 5 bits
        net[0].weight[:, :5] = 0.5
    m = quantize_model(net, FixedPointSpec(bits=4), None)
    st = quantized_storage(m)
    first = st.tensors[0]
    assert first.sparse and first.index_bits == 5 and first.nonzeros == 200
    assert first.fillers == 39 * 2  # each gap of 96 positions needs (96 - 1) // 32 = 2 fillers
    assert first.bits == (200 + 78) * (4 + 5) + 32
    dense = quantized_storage(m, sparse=False).tensors[0]
    assert not dense.sparse and dense.bits == 4000 * 4 + 32


def test_lowest_within_budget_stops_at_first_failure() -> None:
    assert lowest_within_budget([(16, 0.0), (8, 0.05), (4, 0.3), (2, 0.0)], 0.1) == 8
    assert lowest_within_budget([(8, 0.5), (4, 0.0)], 0.1) is None
    assert lowest_within_budget([(4, -0.2), (12, 0.1)], 0.1) == 4


def test_bit_sweep_whole_net_and_per_layer(lenet300_trained: nn.Module, mnist_tiny: DataSplits) -> None:
    cfg = QuantizeConfig(sweep=True, sweep_bits=(12, 6, 2), budget_pp=0.5, calib_batches=2)
    res = bit_sweep(lenet300_trained, mnist_tiny, cfg, seed=0)
    bits, accs = res.series()
    assert bits == [12, 6, 2]
    assert abs(accs[0] - res.reference_accuracy) <= 0.005
    assert accs[2] < accs[0] - 0.005  # 2-bit weights and activations cost accuracy
    assert res.whole_net_bits in (6, 12)
    assert set(res.per_layer_bits) == {"fc1", "fc2", "fc3"}
    assert set(res.combined_bits) == {"fc1", "fc2", "fc3"}
    assert 100 * (res.reference_accuracy - res.combined_accuracy) <= 0.5 + 1e-6 or max(res.combined_bits.values()) == 12
    assert len(res.points) == 3 * 4
