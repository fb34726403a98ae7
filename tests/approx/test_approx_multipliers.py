"""The multiplier models: exactness where the papers say so, error signs and bounds, names and errors."""

from __future__ import annotations

import numpy as np
import pytest

from crosslayer.approx import DEFAULT_NAMES, get_multiplier, library, uniform_metrics
from crosslayer.approx import multipliers as mm
from crosslayer.errors import ConfigError

V = np.arange(256, dtype=np.int64)
A, B = V[:, None], V[None, :]
EXACT = A * B


def test_library_has_at_least_eight_valid_tables() -> None:
    mults = library()
    assert len(mults) >= 8 and len(mults) == len(DEFAULT_NAMES)
    for m in mults:
        assert m.table.shape == (256, 256) and m.table.dtype == np.int64
        if not m.name.startswith("etm"):  # ETM's OR-based low part is non-zero for 0 x b (tested below)
            assert not m.table[0].any() and not m.table[:, 0].any(), m.name
        assert 0 < m.relative_power <= 1.0 and m.source
    assert np.array_equal(get_multiplier("exact").table, EXACT)
    assert all(m.relative_power < 1 for m in mults if m.name != "exact")


def test_truncation_error_is_the_dropped_columns() -> None:
    t = get_multiplier("trunc4").table
    err = t - EXACT
    assert (err <= 0).all()
    assert -err.min() == 1 * 1 + 2 * 2 + 3 * 4 + 4 * 8  # all cells of columns 0..3 set
    # BAM with a horizontal break drops whole rows of the second operand's bits.
    assert np.array_equal(mm.bam(A, B, hbl=2, vbl=0), A * (B & ~3))


def test_perforation_removes_partial_products() -> None:
    assert np.array_equal(get_multiplier("ppp0_2").table, A * (B & 0b11111100))
    assert np.array_equal(get_multiplier("ppp2_3").table, A * (B & ~0b11100))


def test_drum_is_exact_below_two_to_k_and_nearly_unbiased() -> None:
    t = get_multiplier("drum4").table
    assert np.array_equal(t[:16, :16], EXACT[:16, :16])
    met = uniform_metrics(get_multiplier("drum6"))
    assert abs(met.bias) < 0.5 * met.med  # truncation-style designs have |bias| = MED; DRUM rounds to the middle
    assert get_multiplier("drum6").table[255, 255] == (63 | 1) * (63 | 1) << 4


def test_mitchell_underestimates_within_one_ninth() -> None:
    t = get_multiplier("mitchell").table
    nz = EXACT > 0
    rel = (EXACT[nz] - t[nz]) / EXACT[nz]
    assert rel.min() >= 0 and rel.max() <= 1 / 9 + 1e-12
    pow2 = 1 << np.arange(8)
    assert np.array_equal(t[np.ix_(pow2, V)], EXACT[np.ix_(pow2, V)])  # exact when one operand is 2^k
    assert t[3, 3] == 8  # 2^(1+1) (1 + 0.5 + 0.5) = 8 instead of 9


def test_etm_and_kulkarni() -> None:
    t = get_multiplier("etm4").table
    assert np.array_equal(t[:16, :16], EXACT[:16, :16])  # both MSB parts zero: exact
    assert t[16, 16] == 256 + 0  # LSB parts zero: no fill
    assert t[17, 16] == 256 + (1 << 5) - 1  # leading LSB one at p = 0 fills result bits 4..0
    assert t[0, 24] == (1 << 8) - 1  # 0 x 24: MSB part of b non-zero, LSB 1000 -> bits 7..0 filled
    k = get_multiplier("kulkarni").table
    assert k[3, 3] == 7 and (k <= EXACT).all()
    assert k[5, 10] == 50  # 0101 x 1010: no 2-bit digit pair (3, 3), so exact


def test_signed_operands_use_sign_magnitude() -> None:
    m = get_multiplier("mitchell")
    w = np.array([-128, -3, 3, 127])
    a = np.array([[5], [-7]])
    assert np.array_equal(m(w, a), np.sign(w) * np.sign(a) * m(np.abs(w), np.abs(a)))
    with pytest.raises(ConfigError, match="at most 255"):
        m(np.array([300]), np.array([1]))


@pytest.mark.parametrize("name", ["nope", "drum9", "trunc0", "ppp7_3", "etm8"])
def test_unknown_or_out_of_family_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown multiplier .*built-in names: exact"):
        get_multiplier(name)


def test_power_override() -> None:
    assert get_multiplier("drum4", relative_power=0.3).relative_power == 0.3
    with pytest.raises(ConfigError, match="not among"):
        library(("exact",), {"drum4": 0.5})
