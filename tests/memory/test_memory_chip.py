"""Per-chip fault maps: seeded, nested over voltages, binomial counts, the four read-back modes, banks."""

from __future__ import annotations

import math

import pytest
import torch

from crosslayer.errors import ConfigError
from crosslayer.memory import apply_faults, builtin_curve, fault_masks, sample_chip
from crosslayer.resilience.faults import WordFormat, to_words

CURVE = builtin_curve("kc705b-28nm-probit")
TENSORS = [("a", 5000), ("b", 120_000), ("c", 300)]
FMT = WordFormat("int", 8, signed=True)


def test_same_seed_same_chip_and_nested_faults() -> None:
    c1 = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=3)
    c2 = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=3)
    c3 = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=4)
    assert all(torch.equal(c1.layers[n].index, c2.layers[n].index) for n, _ in TENSORS)
    assert not torch.equal(c1.layers["b"].index, c3.layers["b"].index)
    counts = [c1.fault_count(v) for v in (0.55, 0.50, 0.47, 0.44)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    for hi, lo in ((0.50, 0.47), (0.47, 0.44)):  # a cell failing at a voltage fails at every lower one
        f_hi, f_lo = c1.failing("b", hi), c1.failing("b", lo)
        assert bool((f_lo | ~f_hi).all())
    with pytest.raises(ConfigError, match="below 0.44 V"):
        c1.failing("b", 0.43)


@pytest.mark.parametrize("voltage", [0.50, 0.46])
def test_fault_count_follows_the_ber(voltage: float) -> None:
    chips = [sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=s) for s in range(4)]
    bits = chips[0].bits
    expected = bits * CURVE.ber(voltage)
    sd = math.sqrt(expected * (1 - CURVE.ber(voltage)))
    for chip in chips:
        assert abs(chip.fault_count(voltage) - expected) < 5 * sd


def test_read_back_modes() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-128, 128, (5000,), generator=g, dtype=torch.int32)
    words = to_words(codes, FMT)
    for mode in ("stuck0", "stuck1", "flip", "stuck"):
        chip = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=1, mode=mode)
        out = apply_faults(codes, FMT, chip, "a", 0.44)
        idx, mask, high = fault_masks(chip, "a", 0.44)
        new = to_words(out, FMT)
        changed = (new ^ words)
        assert bool((changed & ~_dense(idx, mask, 5000)).eq(0).all())  # only failing bits change
        if mode == "stuck0":
            assert bool((new & ~words).eq(0).all()) and int(high.sum()) == 0
        elif mode == "stuck1":
            assert bool((words & ~new).eq(0).all()) and torch.equal(high, mask)
        elif mode == "flip":
            assert torch.equal(changed, _dense(idx, mask, 5000))
        else:  # stuck at a level drawn once per cell: about half read 1, the same on every read
            ones = sum(bin(int(h)).count("1") for h in high)
            total = sum(bin(int(m)).count("1") for m in mask)
            assert 0.35 < ones / total < 0.65
            assert torch.equal(out, apply_faults(codes, FMT, chip, "a", 0.44))
            assert torch.equal(_dense(idx, high, 5000) & _dense(idx, mask, 5000), to_words(out, FMT)
                               & _dense(idx, mask, 5000))
    zeros = torch.zeros(5000, dtype=torch.int32)
    chip0 = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=1, mode="stuck0")
    assert torch.equal(apply_faults(zeros, FMT, chip0, "a", 0.44), zeros)  # fail-to-0 cannot hurt a 0 word


def _dense(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.int64).index_put_((idx,), vals)


def test_bank_spread_concentrates_faults() -> None:
    def top_share(sigma: float) -> float:
        chip = sample_chip([("w", 200_000)], 8, CURVE, v_low=0.47, seed=5, bank_words=1000, bank_sigma=sigma)
        per_bank = torch.bincount(chip.layers["w"].index[chip.failing("w", 0.47)] // 1000, minlength=200)
        return float(per_bank.sort(descending=True).values[:20].sum() / per_bank.sum())

    uniform, spread = top_share(0.0), top_share(1.5)
    assert uniform < 0.15 and spread > 0.35  # the 10 % most faulty banks


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="fault mode"):
        sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=0, mode="melt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="p_one"):
        sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=0, p_one=float("nan"))
    with pytest.raises(ConfigError, match="not a voltage"):
        sample_chip(TENSORS, 8, CURVE, v_low=float("nan"), seed=0)
    with pytest.raises(ConfigError, match="word width"):
        sample_chip(TENSORS, 0, CURVE, v_low=0.44, seed=0)
    chip = sample_chip(TENSORS, 8, CURVE, v_low=0.44, seed=0)
    with pytest.raises(ConfigError, match="has 10 words but the chip was drawn for 5000"):
        apply_faults(torch.zeros(10, dtype=torch.int32), FMT, chip, "a", 0.5)
    with pytest.raises(ConfigError, match="no tensor 'z'"):
        chip.failing("z", 0.5)
