"""An integer reference implementation of quantized Conv2d / Linear layers (grouped convs included) with
any multiplier table: int64 codes, int64 table lookups (or int64 products) and int64 accumulation, no
floating point until the final rescale. It is deliberately simple and slow; tests and the benchmark
use it to prove that the fast emulation of :mod:`crosslayer.approx.emulate` is bit-exact.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from crosslayer.approx.catalog import resolve
from crosslayer.approx.emulate import approximable_layers, dequantize_output, layer_operand_ranges, unfold_codes
from crosslayer.approx.tables import Multiplier
from crosslayer.errors import StageError
from crosslayer.quant import QuantConv2d, QuantLinear

__all__ = ["IntegerReference", "integer_reference_model", "reference_accumulate"]

_CHUNK = 1 << 22


def reference_accumulate(x: torch.Tensor, w: torch.Tensor, table: torch.Tensor | None, w_lo: int,
                         a_lo: int) -> torch.Tensor:
    """``acc[m, o] = sum_k table[w_ok - w_lo, x_mk - a_lo]`` in int64 (``table=None``: exact ``w x``)."""
    x, w = x.long(), w.long()
    if table is None:
        return x @ w.t()
    m, k = x.shape
    o = w.shape[0]
    flat = table.long().reshape(-1)
    n_a = table.shape[1]
    step = max(1, _CHUNK // max(1, o * k))
    out = []
    for i in range(0, m, step):
        idx = (w[None, :, :] - w_lo) * n_a + (x[i:i + step, None, :] - a_lo)
        out.append(flat[idx].sum(-1))
    return torch.cat(out) if out else torch.zeros(0, o, dtype=torch.long)


class IntegerReference(nn.Module):
    """A quantized layer evaluated by :func:`reference_accumulate` (exact multiplier unless given)."""

    def __init__(self, layer: nn.Module, mult: Multiplier | str | None = None, name: str = "layer") -> None:
        super().__init__()
        (wlo, whi), (alo, ahi) = layer_operand_ranges(layer, name)
        if not isinstance(layer, (QuantConv2d, QuantLinear)):
            raise StageError(f"layer {name!r} ({type(layer).__name__}) is not a QuantConv2d / QuantLinear")
        self.layer: QuantConv2d | QuantLinear = layer
        self.w_lo, self.a_lo = wlo, alo
        self.table = None if mult is None else torch.as_tensor(resolve(mult).product_table((wlo, whi), (alo, ahi)))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        xq, wq = layer.input_codes(x), layer.weight_codes()
        za = int(xq.zero_point.reshape(-1)[0])
        o = wq.codes.shape[0]
        zw = wq.zero_point.reshape(-1).long().expand(o)
        w2 = wq.codes.reshape(o, -1).long()
        groups = layer.groups if isinstance(layer, QuantConv2d) else 1
        if isinstance(layer, QuantConv2d):
            cols = unfold_codes(layer, xq.codes, za).long()
        else:
            cols = xq.codes.reshape(-1, x.shape[-1]).long()
        k = w2.shape[1]
        og = o // groups
        parts = []
        for g in range(groups):  # a grouped conv is `groups` independent convs on channel slices
            cg, wg, zg = cols[:, g * k:(g + 1) * k], w2[g * og:(g + 1) * og], zw[g * og:(g + 1) * og]
            acc_g = reference_accumulate(cg, wg, self.table, self.w_lo, self.a_lo)
            parts.append(acc_g - za * wg.sum(1)[None, :] - cg.sum(1, keepdim=True) * zg[None, :] + k * za * zg[None, :])
        acc = torch.cat(parts, 1)
        scale = wq.scale.reshape(-1).double() * xq.scale.double()
        if isinstance(layer, QuantConv2d):
            n = x.shape[0]
            side = acc.shape[0] // n
            ref = layer._conv_forward(torch.zeros(1, *x.shape[1:]), layer.weight, None)  # output geometry only
            acc = acc.reshape(n, side, o).transpose(1, 2).reshape(n, o, *ref.shape[-2:])
            scale = scale.reshape(-1, 1, 1)
        else:
            acc = acc.reshape(*x.shape[:-1], o)
        return dequantize_output(acc.double(), scale, layer.bias)


def integer_reference_model(model: nn.Module, assignment: Mapping[str, Multiplier | str] | None = None) -> nn.Module:
    """A copy of a quantized ``model`` whose quantized layers are :class:`IntegerReference` (exact
    multipliers, or those of ``assignment``)."""
    out = copy.deepcopy(model)
    for name in approximable_layers(out):
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, attr)
        layer = getattr(layer, "layer", layer)
        mult = (assignment or {}).get(name)
        setattr(parent, attr, IntegerReference(layer, mult, name))
    return out
