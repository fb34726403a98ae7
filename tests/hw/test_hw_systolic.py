"""Golden cycle counts of the systolic model (hand-computed, and cross-checked once against SCALE-Sim v3,
whose COMPUTE_REPORT prints one cycle less: the index of the last busy cycle)."""

from __future__ import annotations

import pytest

from crosslayer.hw.errors import HardwareConfigError, MappingError
from crosslayer.hw.systolic import gemm_timing


@pytest.mark.parametrize(("df", "expected", "scalesim"), [
    # 10x10x3 input, 3x3 kernel, 5 filters on 8x8: Sr = 64, T = 27, Sc = 5
    ("OS", 8 * 1 * (27 + 8 + 8 - 2), 327),
    ("WS", 4 * 1 * (64 + 2 * 8 + 8 - 2), 343),
    ("IS", 4 * 8 * (5 + 2 * 8 + 8 - 2), 863),
])
def test_gemm_cycles_match_hand_computation_and_scalesim(df: str, expected: int, scalesim: int) -> None:
    t = gemm_timing(df, 64, 27, 5, 8, 8)
    assert t.cycles == expected
    assert t.cycles - 1 == scalesim


def test_fc_layer_single_fold() -> None:
    # fc 37 -> 11 on 8x8 under OS: Sr = 1, T = 37, Sc = 11 -> 1 x 2 folds of 37 + 14 cycles
    t = gemm_timing("OS", 1, 37, 11, 8, 8)
    assert (t.row_folds, t.col_folds, t.cycles) == (1, 2, 2 * 51)
    assert t.mapping_efficiency == pytest.approx(11 / (8 * 16))


def test_spatial_array_has_no_skew_and_sparsity_shrinks_stream() -> None:
    dense = gemm_timing("WS", 100, 8, 8, 8, 8, systolic=False)
    assert dense.cycles == 100 + 1
    half = gemm_timing("WS", 100, 8, 8, 8, 8, systolic=False, temporal_scale=0.5)
    assert half.cycles == 50 + 1


def test_bad_inputs_raise_named_errors() -> None:
    with pytest.raises(HardwareConfigError, match="dataflow 'XS' is unknown; allowed: WS, OS, RS, IS"):
        gemm_timing("XS", 1, 1, 1, 8, 8)
    with pytest.raises(MappingError, match="Sr = 0"):
        gemm_timing("OS", 0, 1, 1, 8, 8)
    with pytest.raises(MappingError, match="no GEMM mapping"):
        gemm_timing("RS", 1, 1, 1, 8, 8)
