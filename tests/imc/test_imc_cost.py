"""Energy / area / latency model against hand-computed figures (ISAAC unit values)."""

from __future__ import annotations

import pytest

from crosslayer.errors import ConfigError, StageError
from crosslayer.imc import CrossbarSpec, to_crossbar
from crosslayer.imc.cost import CostParams, MatrixShape, layer_cost, layer_shapes, network_cost
from crosslayer.models import build_model


def test_isaac_unit_figures() -> None:
    p = CostParams()
    assert p.adc_pj_8bit == pytest.approx(1.5625)
    assert p.dac_pj_1bit == pytest.approx(0.390625)
    assert p.cell_read_pj * 128 * 128 == pytest.approx(30.0)


def test_layer_cost_golden() -> None:
    spec = CrossbarSpec(rows=128, cols=128, dac_bits=8, adc_bits=8)
    c = layer_cost(MatrixShape("fc", 300, 100, 2), spec)
    # 3 row tiles x 2 column tiles (200 columns); 8 one-bit input cycles per vector, 2 vectors
    assert c.tiles == 6
    assert c.adc_conversions == 16 * 3 * 100
    assert c.adc_pj == pytest.approx(4800 * 1.5625)
    assert c.dac_pj == pytest.approx(16 * 300 * 2 * 0.390625)
    assert c.array_pj == pytest.approx(16 * 2 * 300 * 100 * 30.0 / 16384)
    assert c.energy_pj == pytest.approx(c.adc_pj + c.dac_pj + c.array_pj)
    # 6 bits: ADC energy / 4; multi-level 2-bit inputs halve the cycles
    c6 = layer_cost(MatrixShape("fc", 300, 100, 2), spec.replace(adc_bits=6), CostParams(input_bits_per_cycle=2))
    assert c6.adc_conversions == 8 * 3 * 100
    assert c6.adc_pj == pytest.approx(2400 * 1.5625 / 4)


def test_network_cost_lenet5_shapes_and_totals() -> None:
    model = build_model("lenet5")
    shapes = layer_shapes(model, (1, 28, 28))
    assert [(s.name, s.in_features, s.out_features, s.vectors) for s in shapes] == [
        ("conv1", 25, 20, 576), ("conv2", 500, 50, 64), ("fc1", 800, 500, 1), ("fc2", 500, 10, 1)]
    costs, totals = network_cost(shapes, CrossbarSpec())
    assert totals["macs"] == 25 * 20 * 576 + 500 * 50 * 64 + 800 * 500 + 500 * 10
    assert totals["energy_pj"] == pytest.approx(sum(c.energy_pj for c in costs))
    assert totals["energy_mac_units"] == pytest.approx(totals["energy_pj"] / 0.3)
    assert 0.0 < totals["adc_share"] < 1.0
    # a crossbar model has the same shapes
    assert layer_shapes(to_crossbar(model, CrossbarSpec()), (1, 28, 28)) == shapes


def test_depthwise_cost_counts_only_the_diagonal_blocks() -> None:
    spec = CrossbarSpec(rows=128, cols=128, dac_bits=8, adc_bits=8)
    # depthwise 3x3 over 32 channels: 288 block-diagonal rows; row tiles hold rows 0-127 (channels 0-14),
    # 128-255 (channels 14-28) and 256-287 (channels 28-31)
    dw = MatrixShape("dw", 32 * 9, 32, 10, groups=32)
    assert dw.row_tiles(128) == [(128, 15), (128, 15), (32, 4)]
    c = layer_cost(dw, spec)
    assert c.tiles == 3
    assert c.adc_conversions == 8 * 10 * (15 + 15 + 4)
    assert c.dac_pj == pytest.approx(8 * 10 * 288 * 0.390625)
    assert c.array_pj == pytest.approx(8 * 10 * 2 * 288 * 30.0 / 16384)  # 9 cells per channel, not 288 x 32
    _, totals = network_cost([dw], spec)
    assert totals["macs"] == 32 * 9 * 10
    # one group is the dense layer
    assert layer_cost(MatrixShape("d", 288, 32, 10, groups=1), spec).adc_conversions == 8 * 10 * 3 * 32
    model = build_model("mobilenetv2-0.5")
    shapes = {s.name: s for s in layer_shapes(model, (1, 28, 28))}
    dws = [s for s in shapes.values() if s.groups > 1]
    assert dws and all(s.groups * 9 == s.in_features and s.groups == s.out_features for s in dws)
    assert layer_shapes(to_crossbar(model, CrossbarSpec()), (1, 28, 28)) == list(shapes.values())
    with pytest.raises(StageError, match="groups do not divide"):
        layer_cost(MatrixShape("x", 10, 4, 1, groups=3), spec)


def test_cost_bad_input() -> None:
    with pytest.raises(StageError, match="empty shape"):
        layer_cost(MatrixShape("x", 0, 3, 1), CrossbarSpec())
    with pytest.raises(ConfigError, match="input_bits_per_cycle"):
        CostParams(input_bits_per_cycle=0)
