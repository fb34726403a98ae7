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


def test_cost_bad_input() -> None:
    with pytest.raises(StageError, match="empty shape"):
        layer_cost(MatrixShape("x", 0, 3, 1), CrossbarSpec())
    with pytest.raises(ConfigError, match="input_bits_per_cycle"):
        CostParams(input_bits_per_cycle=0)
