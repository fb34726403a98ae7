"""Energy, area and latency of a network on crossbar tiles: pure arithmetic on layer shapes.

Per matrix-vector product (MVM) of a layer with ``in`` inputs and ``out`` outputs on
``rows x cols`` tiles (a differential pair takes two columns):

* tiles: ``ceil(in / rows) * ceil(2 out / cols)``;
* input cycles: ``ceil(dac_bits / input_bits_per_cycle)`` (ISAAC streams inputs one bit per cycle,
  PRIME applies multi-level voltages);
* array reads: every cell of the layer's ``2 in out`` devices conducts once per cycle;
* DAC conversions: ``in * ceil(2 out / cols)`` per cycle (each tile drives its own rows);
* ADC conversions: ``ceil(in / rows) * out`` per cycle (the pair is subtracted in the analog domain,
  each tile's partial sum is digitised; the periphery shifts and adds).

A grouped or depthwise convolution (``groups`` blocks of ``in / groups`` x ``out / groups``) is mapped
block-diagonally (see :mod:`crosslayer.imc.crossbar`): each ``rows``-high row tile holds the columns of the
groups whose rows it contains and only those, so the formulas above run per row tile over its active columns,
and only the diagonal blocks' cells are read.

Default unit figures are ISAAC's (Shafiee et al., ISCA 2016, Table 2, 32 nm, 10 MHz crossbar
cycle of 100 ns): 8 ADCs (8 bit, 1.28 GS/s) 16 mW and 0.0096 mm^2; 8 x 128 one-bit DACs 4 mW and
0.00017 mm^2; 8 arrays of 128 x 128 cells 2.4 mW and 0.0002 mm^2. Hence 1.56 pJ per 8-bit
conversion, 0.39 pJ per one-bit DAC cycle, 1.83 fJ per cell read. ADC energy and area scale as
``2^bits`` (the Walden figure of merit: energy per conversion step is constant); a ``k``-bit DAC
costs ``2^k - 1`` one-bit units. A digital MAC is 0.3 pJ (8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ,
Horowitz, ISSCC 2014, 45 nm), used only to express crossbar energy in the digital accelerator's
MAC-normalised units (Eyeriss, Chen et al., ISCA 2016: MAC = 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.errors import StageError
from crosslayer.hw.workload import trace_layers
from crosslayer.imc.spec import CrossbarSpec

__all__ = ["CostParams", "LayerCost", "MatrixShape", "layer_cost", "layer_shapes", "network_cost"]


@dataclass(frozen=True, kw_only=True)
class CostParams(Config):
    """Unit energies (pJ), areas (mm^2) and timing of the crossbar periphery (defaults: ISAAC, see module doc)."""

    adc_pj_8bit: float = 16e-3 / 8 / 1.28e9 * 1e12  # 2 mW per ADC at 1.28 GS/s -> 1.5625 pJ
    adc_mm2_8bit: float = 0.0096 / 8
    dac_pj_1bit: float = 4.0e-3 / 1024 * 100e-9 * 1e12  # 3.9 uW per DAC over a 100 ns cycle -> 0.39 pJ
    dac_mm2_1bit: float = 0.00017 / 1024
    cell_read_pj: float = 2.4e-3 / 8 * 100e-9 * 1e12 / (128 * 128)  # 30 pJ per 128x128 array read
    array_mm2_128: float = 0.0002 / 8  # one 128 x 128 array; scales with its cell count
    cycle_s: float = 100e-9
    input_bits_per_cycle: int = 1
    adcs_per_tile: int = 1
    digital_mac_pj: float = 0.3

    def validate(self) -> None:
        for name in ("adc_pj_8bit", "adc_mm2_8bit", "dac_pj_1bit", "dac_mm2_1bit", "cell_read_pj", "array_mm2_128",
                     "cycle_s", "digital_mac_pj"):
            check_range(name, getattr(self, name), 0.0)
        check_range("input_bits_per_cycle", self.input_bits_per_cycle, 1, 16)
        check_range("adcs_per_tile", self.adcs_per_tile, 1)



@dataclass(frozen=True)
class MatrixShape:
    """One crossbar-mapped layer: its matrix (in x out) and how many input vectors one inference feeds it (the
    hardware model's :class:`~crosslayer.hw.shapes.LayerShape` describes a layer for a digital accelerator)."""

    name: str
    in_features: int
    out_features: int
    vectors: int
    groups: int = 1

    @property
    def macs_per_vector(self) -> int:
        return self.in_features * self.out_features // self.groups

    def row_tiles(self, rows: int) -> list[tuple[int, int]]:
        """(rows used, active output columns) of each ``rows``-high row tile of the block-diagonal matrix."""
        in_g, out_g = self.in_features // self.groups, self.out_features // self.groups
        out = []
        for r0 in range(0, self.in_features, rows):
            r1 = min(self.in_features, r0 + rows)
            touched = (r1 - 1) // in_g - r0 // in_g + 1
            out.append((r1 - r0, touched * out_g))
        return out


@dataclass(frozen=True)
class LayerCost:
    name: str
    tiles: int
    mvms: int
    array_pj: float
    dac_pj: float
    adc_pj: float
    adc_conversions: int
    area_mm2: float
    latency_s: float

    @property
    def energy_pj(self) -> float:
        return self.array_pj + self.dac_pj + self.adc_pj

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "energy_pj": self.energy_pj}


def layer_cost(shape: MatrixShape, spec: CrossbarSpec, params: CostParams | None = None) -> LayerCost:
    """Energy per inference, area and latency of one layer (ideal converters, 0 bits, are costed as 8 bits)."""
    p = params or CostParams()
    if shape.in_features < 1 or shape.out_features < 1 or shape.vectors < 1:
        raise StageError(f"layer {shape.name!r} has an empty shape {shape}")
    if shape.groups < 1 or shape.in_features % shape.groups or shape.out_features % shape.groups:
        raise StageError(f"layer {shape.name!r}: {shape.groups} groups do not divide {shape}")
    per_tile = shape.row_tiles(spec.rows)
    col_tiles = [math.ceil(2 * active / spec.cols) for _, active in per_tile]
    dac_bits = spec.dac_bits or 8
    adc_bits = spec.adc_bits or 8
    k = min(p.input_bits_per_cycle, dac_bits)
    cycles = math.ceil(dac_bits / k) * shape.vectors
    cells = 2 * shape.macs_per_vector
    adc_conv = cycles * sum(active for _, active in per_tile)
    adc_pj = adc_conv * p.adc_pj_8bit * 2.0 ** (adc_bits - 8)
    dac_pj = cycles * sum(used * c for (used, _), c in zip(per_tile, col_tiles, strict=True)) * p.dac_pj_1bit * (
        2 ** k - 1)
    array_pj = cycles * cells * p.cell_read_pj
    tiles = sum(col_tiles)
    area = tiles * (p.array_mm2_128 * spec.rows * spec.cols / (128 * 128)
                    + p.adcs_per_tile * p.adc_mm2_8bit * 2.0 ** (adc_bits - 8)
                    + spec.rows * p.dac_mm2_1bit * (2 ** k - 1))
    # columns of a tile share its ADCs: one read cycle lasts max(cycle, conversions / ADC rate)
    conv_per_adc = math.ceil(min(spec.cols // 2, max(active for _, active in per_tile)) / p.adcs_per_tile)
    adc_rate = 1.28e9 / 2.0 ** (adc_bits - 8)  # ISAAC's 8-bit SAR rate; one bit more halves it
    latency = cycles * max(p.cycle_s, conv_per_adc / adc_rate)
    return LayerCost(shape.name, tiles, shape.vectors, array_pj, dac_pj, adc_pj, adc_conv, area, latency)


def network_cost(shapes: list[MatrixShape], spec: CrossbarSpec, params: CostParams | None = None
                 ) -> tuple[list[LayerCost], dict[str, float]]:
    """Per-layer costs and totals (energy in pJ and in digital-MAC units, area, latency, MACs)."""
    p = params or CostParams()
    costs = [layer_cost(s, spec, p) for s in shapes]
    energy = sum(c.energy_pj for c in costs)
    macs = sum(s.macs_per_vector * s.vectors for s in shapes)
    totals = {"energy_pj": energy, "energy_mac_units": energy / p.digital_mac_pj if p.digital_mac_pj else math.inf,
              "area_mm2": sum(c.area_mm2 for c in costs), "latency_s": sum(c.latency_s for c in costs),
              "tiles": float(sum(c.tiles for c in costs)), "macs": float(macs),
              "energy_pj_per_mac": energy / max(1, macs),
              "adc_share": sum(c.adc_pj for c in costs) / energy if energy else 0.0}
    return costs, totals


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[MatrixShape]:
    """The Linear / Conv2d (or crossbar) layers of ``model`` as matrices, with input vectors per inference,
    found by one traced forward pass (:func:`~crosslayer.hw.workload.trace_layers`) of a zero image of
    ``input_shape`` (C, H, W)."""
    from crosslayer.imc.crossbar import CrossbarLayer

    def mapped(_name: str, m: nn.Module) -> bool:
        return isinstance(m, (nn.Linear, nn.Conv2d, CrossbarLayer))

    if not any(mapped(n, m) for n, m in model.named_modules()):
        raise StageError("the model has no Linear or Conv2d layer to cost on a crossbar")
    found: list[MatrixShape] = []
    for c in trace_layers(model, torch.zeros(1, *input_shape), mapped):
        mod = c.module
        if isinstance(mod, nn.Conv2d) or (isinstance(mod, CrossbarLayer) and mod.kind == "conv"):
            vectors = int(c.output_shape[-1] * c.output_shape[-2])
        else:
            vectors = math.prod(c.input_shape) // c.input_shape[-1]
        w = mod.effective_weight() if isinstance(mod, CrossbarLayer) else mod.get_parameter("weight")
        groups = int(getattr(mod, "groups", 1))
        found.append(MatrixShape(c.name, int(w[0].numel()) * groups, int(w.shape[0]), vectors, groups))
    return found
