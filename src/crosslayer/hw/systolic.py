"""Compute cycles of a GEMM on a 2-D PE array under WS, OS and IS (SCALE-Sim-compatible timing).

The layer is an (Sr x T) im2col input times a (T x Sc) weight matrix (Samajdar et al., "A Systematic
Methodology for Characterizing Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020). Each
dataflow maps two of (Sr, T, Sc) onto the array's rows and columns and streams the third in time:

==========  ===========  ===========  ==========  ==========================================
dataflow    array rows   array cols   temporal    per-fold cycles (systolic)
==========  ===========  ===========  ==========  ==========================================
OS          Sr           Sc           T           T  + rows + cols - 2
WS          T            Sc           Sr          Sr + 2*rows + cols - 2
IS          T            Sr           Sc          Sc + 2*rows + cols - 2
==========  ===========  ===========  ==========  ==========================================

Why these terms: SCALE-Sim v3 builds, per fold, a demand matrix of the temporal operand (its length is
the fold's cycle count). For OS it appends ``cols - 1`` idle rows so outputs drain before the next fold
and skews the matrix by ``rows - 1`` for the systolic fill. WS and IS first spend ``rows`` cycles loading
the stationary operand, then stream, drain (``cols - 1``) and skew (``rows - 1``). Folds run back to back,
so the layer takes ``folds * per_fold`` cycles; SCALE-Sim's COMPUTE_REPORT "Total Cycles" prints the index
of the last busy cycle, one less. A partial fold costs as much as a full one (idle PEs), which is how
shapes that do not divide the array lose utilisation. A ``spatial`` (multicast, Eyeriss-like) array has
no systolic skew, so a fold there costs only its temporal length plus one cycle to latch operands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crosslayer.hw.accelerator import check_dataflow
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import ceil_div

__all__ = ["ArrayTiming", "gemm_timing"]


@dataclass(frozen=True)
class ArrayTiming:
    """Timing of one GEMM on the array."""

    spatial_rows: int      # the GEMM dimension mapped on array rows
    spatial_cols: int      # the GEMM dimension mapped on array columns
    temporal: int          # the dimension streamed in time
    row_folds: int
    col_folds: int
    per_fold_overhead: int  # fill / drain cycles added to each fold's temporal length
    cycles: int
    mapping_efficiency: float  # fraction of the PEs a fold maps work to (averaged over folds)

    @property
    def folds(self) -> int:
        return self.row_folds * self.col_folds


def _split(dataflow: str, sr: int, t: int, sc: int) -> tuple[int, int, int]:
    if dataflow == "OS":
        return sr, sc, t
    if dataflow == "WS":
        return t, sc, sr
    if dataflow == "IS":
        return t, sr, sc
    raise MappingError(f"dataflow {dataflow!r} has no GEMM mapping; allowed: OS, WS, IS")


def gemm_timing(dataflow: str, sr: int, t: int, sc: int, rows: int, cols: int, *, systolic: bool = True,
                temporal_scale: float = 1.0) -> ArrayTiming:
    """Cycles of an (Sr x T) x (T x Sc) product on a ``rows x cols`` array under ``dataflow``.

    ``temporal_scale`` (<= 1 with zero-skipping, times the load-imbalance factor) shrinks the streamed
    length of every fold; the fill/drain overhead is paid in full.
    """
    check_dataflow(dataflow)
    for name, v in (("Sr", sr), ("T", t), ("Sc", sc), ("rows", rows), ("cols", cols)):
        if v <= 0:
            raise MappingError(f"GEMM dimension {name} = {v} must be positive")
    if temporal_scale <= 0:
        raise MappingError(f"temporal_scale = {temporal_scale} must be positive")
    a, b, temporal = _split(dataflow, sr, t, sc)
    rf, cf = ceil_div(a, rows), ceil_div(b, cols)
    overhead = (rows + cols - 2 if dataflow == "OS" else 2 * rows + cols - 2) if systolic else 1
    stream = max(1, math.ceil(temporal * temporal_scale - 1e-9))
    cycles = rf * cf * (stream + overhead)
    eff = (a * b) / (rf * rows * cf * cols)
    return ArrayTiming(a, b, temporal, rf, cf, overhead, cycles, eff)
