"""Campaigns: seeded, Leveugle-sized, with intervals; MSBs hurt more than LSBs; BER and noise campaigns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crosslayer.errors import ConfigError
from crosslayer.resilience import (
    activation_bitflips,
    ber_campaign,
    bit_sensitivity,
    leveugle_sample_size,
    noise_campaign,
    rank_layers,
    statistical_campaign,
)


def test_bit_sensitivity_int8(lenet5_int8: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    kw = dict(layers=["conv1", "fc2"], bits=[7, 0], injections=8, seed=5)
    a = bit_sensitivity(lenet5_int8, x, y, **kw)  # type: ignore[arg-type]
    b = bit_sensitivity(lenet5_int8, x, y, **kw)  # type: ignore[arg-type]
    assert [r.drop_pp for r in a.records] == [r.drop_pp for r in b.records]
    assert len(a.records) == 2 * 2 * 8 and len(a.cells) == 4 and len(a.layers) == 2
    cell = {(c.layer, c.bit): c for c in a.cells}
    for layer in ("conv1", "fc2"):
        lsb, msb = cell[(layer, 0)], cell[(layer, 7)]
        # one LSB of an 8-bit weight is benign; an MSB flip is a full-scale weight, still bounded by the scale
        assert abs(lsb.mean_drop_pp) <= 1.0 and msb.mean_drop_pp >= lsb.mean_drop_pp - 1.0
        assert msb.drop_ci[0] <= msb.mean_drop_pp <= msb.drop_ci[1]
        assert 0.0 <= msb.critical_ci[0] <= msb.critical_rate <= msb.critical_ci[1] <= 1.0
    assert a.formats == {"conv1": "sint8", "fc2": "sint8"}
    assert a.injections_per_s > 0


def test_statistical_campaign_size(lenet5_trained: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    res = statistical_campaign(lenet5_trained, x, y, layers=["conv1", "fc2"], bits=[31, 30], margin=0.1,
                               confidence=0.9, seed=1)
    exp_msb = [r.drop_pp for r in res.records if r.bit == 30]
    assert sum(exp_msb) / len(exp_msb) > 5.0  # float32 exponent-MSB flips make huge weights
    population = (500 + 5000) * 2
    assert len(res.records) == leveugle_sample_size(population, 0.1, 0.9)
    assert res.overall is not None and res.overall.population == population
    # uniform over sites: fc2 holds 10x the weights of conv1
    n_fc2 = sum(r.layer == "fc2" for r in res.records)
    assert n_fc2 > 0.75 * len(res.records)
    assert {r.bit for r in res.records} <= {31, 30}
    with pytest.raises(ConfigError, match="margin"):
        statistical_campaign(lenet5_trained, x, y, margin=1.5)


def test_ber_campaign(lenet5_int8: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    before = {k: v.clone() for k, v in lenet5_int8.state_dict().items()}
    base, stats = ber_campaign(lenet5_int8, x, y, bers=[0.0, 0.3], layers=["conv1", "fc2"], trials=2, seed=0)
    by = {(s.target, s.level): s for s in stats}
    assert set(by) == {(t, b) for t in ("conv1", "fc2", "all") for b in (0.0, 0.3)}
    assert by[("all", 0.0)].mean_drop_pp == 0.0 and by[("all", 0.0)].mean_faults == 0
    assert by[("all", 0.3)].mean_drop_pp > 5.0
    assert by[("fc2", 0.3)].mean_faults == pytest.approx(5000 * 8 * 0.3, rel=0.05)
    assert 0.5 < base <= 1.0
    assert all(torch.equal(before[k], v) for k, v in lenet5_int8.state_dict().items())
    _, stuck = ber_campaign(lenet5_int8, x, y, bers=[0.05], layers=["fc2"], trials=1, mode="stuck", seed=0)
    assert stuck[0].mean_faults > 0


def test_noise_and_activation_campaigns(lenet5_int8: nn.Module, subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    _, zero = noise_campaign(lenet5_int8, x, y, sigma=0.0, trials=1)
    assert all(s.mean_drop_pp == 0.0 for s in zero)
    _, loud = noise_campaign(lenet5_int8, x, y, sigma=3.0, layers=["fc1"], trials=2, seed=1)
    assert loud[0].mean_drop_pp > 5.0
    # 8-bit input codes: flipping bit 7 of 200 of fc1's 800 input activations per image hurts (24-67 pp over
    # three differently trained LeNet-5s); bit 0 barely (0 pp). 20 flips cost only 1-2 images of 100: too few
    # to compare reliably.
    _, msb = activation_bitflips(lenet5_int8, x, y, layers=["fc1"], flips=200, bit=7, trials=1)
    _, lsb = activation_bitflips(lenet5_int8, x, y, layers=["fc1"], flips=200, bit=0, trials=1)
    assert msb[0].mean_drop_pp > lsb[0].mean_drop_pp + 5.0
    with pytest.raises(ConfigError, match="beyond the 8-bit word"):
        activation_bitflips(lenet5_int8, x, y, layers=["fc1"], bit=8)
    assert not any(m._forward_pre_hooks for m in lenet5_int8.modules())


def test_rank_layers() -> None:
    assert rank_layers({"a": 2.0, "b": 0.1, "c": 2.0, "d": -0.5}) == ["d", "b", "a", "c"]
