"""Weight <-> conductance mapping and the device non-idealities (pure tensor functions)."""

from __future__ import annotations

import math

import pytest
import torch

from crosslayer.imc import CrossbarSpec, map_to_conductance, program, to_weight, weight_noise
from crosslayer.imc.devices import apply_drift, apply_stuck, apply_variation, quantize_levels


def _w(n: int = 20000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n // 100, 100, generator=torch.Generator().manual_seed(seed))


def test_mapping_range_levels_and_round_trip() -> None:
    spec = CrossbarSpec(g_min=2.0, g_max=20.0, levels=8)
    w = _w()
    c = map_to_conductance(w, spec)
    for g in (c.g_pos, c.g_neg):
        assert float(g.min()) >= 2.0 and float(g.max()) <= 20.0
        assert len(torch.unique(g)) <= 8
    # one device of each pair sits at g_min; the realised weight is within half a level step
    assert bool(((c.g_pos == 2.0) | (c.g_neg == 2.0)).all())
    step_w = (18.0 / 7) * c.w_per_g
    assert float((to_weight(c) - w).abs().max()) <= step_w / 2 + 1e-5
    fine = map_to_conductance(w, spec.replace(levels=2**20))
    assert torch.allclose(to_weight(fine), w, atol=1e-4)


def test_zero_weights_map_to_gmin_pairs() -> None:
    c = map_to_conductance(torch.zeros(3, 4), CrossbarSpec())
    assert torch.equal(c.g_pos, torch.full((3, 4), 1.0)) and torch.equal(c.g_neg, c.g_pos)
    assert float(to_weight(c).abs().max()) == 0.0


def test_quantize_levels_two_levels() -> None:
    spec = CrossbarSpec(g_min=0.0, g_max=10.0, levels=2)
    g = quantize_levels(torch.tensor([-1.0, 4.9, 5.1, 12.0]), spec)
    assert g.tolist() == [0.0, 0.0, 10.0, 10.0]


def test_lognormal_and_gaussian_statistics() -> None:
    gen = torch.Generator().manual_seed(1)
    g = torch.full((200_000,), 10.0)
    ln = apply_variation(g, 0.3, CrossbarSpec(variation="lognormal"), gen)
    assert float(torch.log(ln / 10.0).std()) == pytest.approx(0.3, rel=0.02)
    ga = apply_variation(g, 0.05, CrossbarSpec(variation="gaussian", g_min=0.0, g_max=20.0), gen)
    assert float(ga.std()) == pytest.approx(0.05 * 20.0, rel=0.02)
    assert float(ga.mean()) == pytest.approx(10.0, abs=0.01)
    assert torch.equal(apply_variation(g, 0.0, CrossbarSpec(), gen), g)


def test_stuck_at_rates() -> None:
    spec = CrossbarSpec(stuck_on_rate=0.02, stuck_off_rate=0.05)
    g = torch.full((100_000,), 10.0)
    out = apply_stuck(g, spec, torch.Generator().manual_seed(2))
    assert float((out == spec.g_max).float().mean()) == pytest.approx(0.02, abs=0.002)
    assert float((out == spec.g_min).float().mean()) == pytest.approx(0.05, abs=0.003)


def test_drift_power_law_and_compensation() -> None:
    spec = CrossbarSpec(drift_nu=0.05, drift_time=1000.0, drift_t0=1.0)
    g = torch.full((10,), 8.0)
    out = apply_drift(g, spec, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full((10,), 8.0 * 1000.0 ** -0.05))
    w = _w(2000)
    plain = to_weight(program(w, spec.replace(drift_compensation=False), chip_seed=0, cycle_seed=0))
    comp = to_weight(program(w, spec, chip_seed=0, cycle_seed=0))
    ref = to_weight(map_to_conductance(w, spec))
    assert torch.allclose(plain, ref * 1000.0 ** -0.05, atol=1e-5)
    assert torch.allclose(comp, ref, atol=1e-4)


def test_program_seeds_chip_versus_cycle() -> None:
    spec = CrossbarSpec(d2d_sigma=0.2, stuck_off_rate=0.01)
    w = _w(2000)
    a = program(w, spec, chip_seed=1, cycle_seed=1)
    b = program(w, spec, chip_seed=1, cycle_seed=1)
    assert torch.equal(a.g_pos, b.g_pos)
    # no c2c variation: a new programming of the same chip is identical, another chip is not
    assert torch.equal(program(w, spec, chip_seed=1, cycle_seed=2).g_pos, a.g_pos)
    assert not torch.equal(program(w, spec, chip_seed=2, cycle_seed=1).g_pos, a.g_pos)
    c2c = spec.replace(c2c_sigma=0.1)
    assert not torch.equal(program(w, c2c, chip_seed=1, cycle_seed=2).g_pos,
                           program(w, c2c, chip_seed=1, cycle_seed=1).g_pos)


def test_weight_noise_scale_and_determinism() -> None:
    w = _w(20000)
    spec = CrossbarSpec(variation="gaussian", g_min=5.0, g_max=25.0, levels=2**20, d2d_sigma=0.03, c2c_sigma=0.04)
    n1 = weight_noise(w, spec, torch.Generator().manual_seed(3))
    n2 = weight_noise(w, spec, torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2) and not n1.requires_grad
    # two devices per weight, each with std sigma * window (in weight units: sigma * max|w|); g_min keeps them > 0
    expected = math.sqrt(2) * 0.05 * float(w.abs().max())
    assert float(n1.std()) == pytest.approx(expected, rel=0.03)
