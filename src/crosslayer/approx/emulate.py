"""Approximate inference: Conv2d / Linear evaluated on their integer codes with an approximate
multiplier per layer and exact integer accumulation.

A layer's accumulators ``acc[m, o] = sum_k T[w_ok, a_mk]`` (``T`` the multiplier's product table on
the raw codes) are computed by :mod:`crosslayer.approx.kernels`: for a table of small exact rank
``T = F G / D`` (exact, DRUM, perforation, Kulkarni, truncation / broken-array, ETM) as one float32
convolution / matmul over ``R`` stacked channels of transformed codes, exact because every partial sum
is an integer below ``2^24``; for any other table (Mitchell) by vectorised table lookups
(``embedding_bag`` over cache-sized table chunks, as AdaPT's CPU kernels). Zero-point corrections
(asymmetric codes) are exact integer terms, as in gemmlowp's integer GEMM (Jacob et al., CVPR 2018).
:func:`integer_accumulate` keeps the older exact-product-plus-error-lookup formulation for callers that
hold im2col rows.

:class:`ApproxLayer` wraps a quantized layer and is a normal ``nn.Module``: ``forward`` returns the
approximate output, and in training mode the approximation-aware (AxNN, Venkataramani et al., ISLPED
2014) straight-through form ``approx(x) + (fq(x) - fq(x).detach())`` so gradients flow as through the
fake-quantized layer while the loss sees the approximate output.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.approx.catalog import get_multiplier, resolve
from crosslayer.approx.kernels import ConvGeometry, LayerKernel, Method, TunedKernel, build_kernel
from crosslayer.approx.tables import Multiplier
from crosslayer.checkpoint import ChildBuilder, LayerCodec, register_layer_codec
from crosslayer.errors import StageError
from crosslayer.quant import FixedPointSpec, QuantConv2d, QuantizedTensor, QuantLayer, QuantLinear, qrange

__all__ = ["ApproxLayer", "approx_layers", "approximable_layers", "approximate_model", "assignment_of",
           "dequantize_output", "integer_accumulate", "layer_operand_ranges", "unfold_codes"]

log = logging.getLogger(__name__)

_F32_EXACT = float(2**24)
_ROWS_PER_CHUNK = 1 << 22  # index elements per embedding_bag call (bounds temporary memory)


def _operand_range(spec: FixedPointSpec | None, what: str, name: str) -> tuple[int, int]:
    if spec is None:
        raise StageError(f"layer {name!r} has no integer {what} codes: quantize the model (weights and "
                         "activations) to 8 bits first")
    if spec.bits > 8:
        raise StageError(f"layer {name!r} codes its {what} with {spec.bits} bits; 8-bit multipliers need "
                         "at most 8 bits")
    return qrange(spec.bits, spec.signed)


def layer_operand_ranges(layer: nn.Module, name: str = "layer") -> tuple[tuple[int, int], tuple[int, int]]:
    """(weight code range, activation code range) of a quantized layer; a clear error if it has none."""
    if not isinstance(layer, QuantLayer):
        raise StageError(f"layer {name!r} ({type(layer).__name__}) has no integer codes: quantize the model first")
    return (_operand_range(layer.weight_spec, "weight", name), _operand_range(layer.act_spec, "activation", name))


def unfold_codes(layer: nn.Conv2d, codes: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Input codes of a conv as im2col rows ``(N * L, C_in * kh * kw)`` (padding filled with ``pad_value``,
    the code of real zero)."""
    if layer.padding_mode != "zeros":
        raise StageError(f"approximate conv supports padding_mode='zeros' only, got {layer.padding_mode!r}")
    x = codes.to(torch.float32)
    pads = layer._reversed_padding_repeated_twice
    if any(pads):
        x = F.pad(x, pads, value=float(pad_value))
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)  # (N, K, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _exact_dtype(k: int, wmax: int, amax: int) -> torch.dtype:
    return torch.float32 if k * wmax * amax < _F32_EXACT else torch.float64


def _gather_table(err: torch.Tensor, w_idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``G[a * K + k, o] = E[w_idx[o, k], a]`` as an (A * K, O) matrix (one gather, no transpose copy)."""
    o = w_idx.shape[0]
    return err.t().to(dtype)[:, w_idx.t()].reshape(-1, o)


def integer_accumulate(x_codes: torch.Tensor, w_codes: torch.Tensor, err: torch.Tensor | None,
                       w_lo: int, a_lo: int, gather: torch.Tensor | None = None) -> torch.Tensor:
    """``acc[m, o] = sum_k T[w_ok, x_mk]`` with ``T = w a + err[w - w_lo, a - a_lo]``, exact, as float64.

    ``x_codes`` (M, K) and ``w_codes`` (O, K) are integer-valued tensors; ``err`` is the (W, A) error
    table (``None`` = exact multiplier); ``gather`` an optional precomputed :func:`_gather_table`.
    """
    m, k = x_codes.shape
    wmax = int(w_codes.abs().max()) if w_codes.numel() else 0
    amax = int(x_codes.abs().max()) if x_codes.numel() else 0
    dt = _exact_dtype(k, wmax, amax)
    acc = (x_codes.to(dt) @ w_codes.to(dt).t()).to(torch.float64)
    if err is None:
        return acc
    n_a = err.shape[1]
    emax = float(err.abs().max())
    edt = torch.float32 if k * emax < _F32_EXACT else torch.float64
    if gather is None and m < n_a:  # fewer rows than table columns: gathering per MAC is cheaper
        return acc + _direct_error(x_codes, w_codes, err, w_lo, a_lo)
    if gather is None:
        gather = _gather_table(err, (w_codes - w_lo).long(), edt)
    idx = (x_codes.long() - a_lo) * k + torch.arange(k, device=x_codes.device)
    step = max(1, _ROWS_PER_CHUNK // max(1, k))
    parts = [F.embedding_bag(idx[i:i + step], gather, mode="sum") for i in range(0, m, step)]
    return acc + torch.cat(parts).to(torch.float64)


def _direct_error(x_codes: torch.Tensor, w_codes: torch.Tensor, err: torch.Tensor, w_lo: int,
                  a_lo: int) -> torch.Tensor:
    """``sum_k err[w_ok, x_mk]`` by one gather per MAC, in row chunks (int64 sums, exact)."""
    m, k = x_codes.shape
    o = w_codes.shape[0]
    flat = err.reshape(-1)
    w_off = ((w_codes.long() - w_lo) * err.shape[1])[None]
    step = max(1, _ROWS_PER_CHUNK // max(1, o * k))
    parts = [flat[w_off + (x_codes[i:i + step].long() - a_lo)[:, None, :]].sum(-1) for i in range(0, m, step)]
    return torch.cat(parts).to(torch.float64)


class ApproxLayer(nn.Module):
    """A quantized Conv2d / Linear computed with an approximate multiplier (see module docstring).

    ``method`` chooses the accumulation kernel: ``auto`` (exact low-rank factors when the table has a
    small rank, else lookups), ``factors`` or ``lookup``; all three give the same bits.
    """

    error_table: torch.Tensor
    layer: QuantConv2d | QuantLinear

    def __init__(self, layer: nn.Module, mult: Multiplier | str, name: str = "layer", *,
                 method: Method = "auto") -> None:
        super().__init__()
        mult = resolve(mult)
        if not isinstance(layer, (QuantConv2d, QuantLinear)):
            raise StageError(f"layer {name!r} ({type(layer).__name__}) has no integer codes: quantize the model "
                             "first")
        (wlo, whi), (alo, ahi) = layer_operand_ranges(layer, name)
        if isinstance(layer, QuantConv2d) and layer.padding_mode != "zeros":
            raise StageError(f"layer {name!r}: approximate conv supports padding_mode='zeros' only")
        if method not in ("auto", "factors", "lookup"):
            raise StageError(f"layer {name!r}: method = {method!r}; allowed auto, factors, lookup")
        self.layer = layer
        self.layer_name = name
        self.multiplier_name = mult.name
        self.relative_power = mult.relative_power
        self.method: Method = method
        table = torch.as_tensor(mult.product_table((wlo, whi), (alo, ahi)))
        w = torch.arange(wlo, whi + 1, dtype=torch.int64)
        a = torch.arange(alo, ahi + 1, dtype=torch.int64)
        self.register_buffer("error_table", table - w[:, None] * a[None, :])
        self.w_lo, self.a_lo = wlo, alo
        self._cache: tuple[Any, LayerKernel] | None = None
        self._tuned: Method | None = None  # the kernel ``auto`` timed fastest for this layer (same bits either way)
        self._wcache: tuple[Any, QuantizedTensor] | None = None

    @property
    def is_exact(self) -> bool:
        """Whether this layer's products are all exact (its error table is all zero)."""
        return not bool(self.error_table.any())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_wcache"] = None
        state["_tuned"] = None  # a speed choice of this machine
        return state

    def extra_repr(self) -> str:
        return f"multiplier={self.multiplier_name!r}, relative_power={self.relative_power:.3f}"

    def product_table(self) -> torch.Tensor:
        """``T[w - w_lo, a - a_lo]`` (int64) of this layer's multiplier over its operand ranges."""
        err = self.error_table.cpu()
        w = torch.arange(self.w_lo, self.w_lo + err.shape[0], dtype=torch.int64)
        a = torch.arange(self.a_lo, self.a_lo + err.shape[1], dtype=torch.int64)
        return err + w[:, None] * a[None, :]

    def kernel(self, w_codes: torch.Tensor) -> LayerKernel:
        """The accumulation kernel of the current weight codes (cached while the weights do not change)."""
        weight = self.layer.weight
        key = (weight._version, weight.data_ptr(), tuple(w_codes.shape), self.error_table._version,
               self.error_table.data_ptr(), self.method)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        layer = self.layer
        geo = None
        if isinstance(layer, QuantConv2d):
            p = layer._reversed_padding_repeated_twice
            geo = ConvGeometry(kernel=(layer.kernel_size[0], layer.kernel_size[1]),
                               stride=(layer.stride[0], layer.stride[1]),
                               dilation=(layer.dilation[0], layer.dilation[1]),
                               pads=(p[0], p[1], p[2], p[3]), groups=layer.groups)
        method = self._tuned if self.method == "auto" and self._tuned is not None else self.method
        kern = build_kernel(w_codes, self.product_table().numpy(), self.w_lo, self.a_lo, geo, method)
        self._cache = (key, kern)
        return kern

    def _weight_codes(self) -> QuantizedTensor:
        """The layer's weight codes, re-quantized only when the weights changed."""
        weight = self.layer.weight
        key = (weight._version, weight.data_ptr())
        if self._wcache is None or self._wcache[0] != key:
            self._wcache = (key, self.layer.weight_codes())
        return self._wcache[1]

    def _input_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Activation codes as an integer-valued float32 tensor (the values of ``layer.input_codes``, without
        the int32 round trip), the activation scale and the zero point."""
        layer = self.layer
        spec = layer.act_spec
        assert spec is not None
        if spec.scheme != "uniform":
            xq = layer.input_codes(x)
            return xq.codes.to(torch.float32), xq.scale, int(xq.zero_point.reshape(-1)[0])
        scale, zp = layer.act_scale()
        qmin, qmax = qrange(spec.bits, spec.signed)
        codes = torch.round(x.detach() / scale)  # the arithmetic of crosslayer.quant.quantize, op for op
        codes = (codes + zp).clamp_(qmin, qmax) if bool(zp != 0) else codes.clamp_(qmin, qmax)
        return codes.to(torch.float32).contiguous(), scale, int(zp)

    def _accumulate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact integer accumulators (float32 or float64, layer output layout) and the output scale."""
        layer = self.layer
        if not layer.act_calibrated:
            raise StageError(f"layer {self.layer_name!r}: activation range not calibrated; run calibration data "
                             "through the quantized model first")
        codes, a_scale, za = self._input_codes(x)
        wq = self._weight_codes()
        out_ch = wq.codes.shape[0]
        zw = wq.zero_point.reshape(-1).to(torch.float64)
        zw = zw.expand(out_ch) if zw.numel() == 1 else zw
        kern = self.kernel(wq.codes)
        w_scale = wq.scale.reshape(-1).to(torch.float64) * a_scale.to(torch.float64)
        if isinstance(layer, QuantConv2d):
            acc = _zero_point_fix_conv(kern.accumulate(codes, za), codes, wq.codes, za, zw, kern)
            self._keep_tuned(kern)
            return acc, w_scale.reshape(-1, 1, 1)
        xc = codes.reshape(-1, x.shape[-1])
        acc = _zero_point_fix(kern.accumulate(xc, za), xc, wq.codes.reshape(out_ch, -1), za, zw)
        self._keep_tuned(kern)
        return acc.reshape(*x.shape[:-1], out_ch), w_scale

    def _keep_tuned(self, kern: LayerKernel) -> None:
        """Remember ``auto``'s timed choice, so that kernels rebuilt for new weights (fine-tuning) skip the timing."""
        if isinstance(kern, TunedKernel) and kern.choice is not None:
            self._tuned = "factors" if kern.choice == "factors" else "lookup"

    def accumulate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact integer accumulators (float64, layer output layout) and the output scale."""
        acc, scale = self._accumulate(x)
        return acc.to(torch.float64), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            acc, scale = self._accumulate(x)
            out = dequantize_output(acc, scale, self.layer.bias).contiguous()
        if torch.is_grad_enabled() and self.training:
            fq = self.layer(x)
            return out.to(fq.dtype) + (fq - fq.detach())  # value: approximate; gradient: fake-quantized
        return out


def _encode_approx(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, ApproxLayer)
    return {"multiplier": m.multiplier_name, "relative_power": m.relative_power, "method": m.method}


def _decode_approx(settings: dict[str, Any], original: nn.Module, child: ChildBuilder) -> nn.Module:
    """An :class:`ApproxLayer` around its recorded quantized layer. The product table itself is data of the
    state dict (``error_table``, loaded strictly afterwards), so a multiplier read from a truth-table file
    comes back as saved; the record gives its name, power figure and kernel method."""
    name, power, method = settings.get("multiplier"), settings.get("relative_power"), settings.get("method")
    if not isinstance(name, str) or not 0 < len(name) <= 64 or not name.isprintable():
        raise StageError("an approximate layer's multiplier name must be a short printable string")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0.0 < float(power) <= 10.0:
        raise StageError(f"relative_power of multiplier {name!r} = {power!r}; allowed (0, 10]")
    if method not in ("auto", "factors", "lookup"):
        raise StageError(f"method = {method!r}; allowed auto, factors, lookup")
    layer = ApproxLayer(child("layer"), get_multiplier("exact", float(power)), method=method)
    layer.multiplier_name = name
    return layer


register_layer_codec(LayerCodec("approx.layer", ApproxLayer, _encode_approx, _decode_approx, children=("layer",)))


def _zero_point_fix_conv(acc: torch.Tensor, x: torch.Tensor, w: torch.Tensor, za: int, zw: torch.Tensor,
                         kern: LayerKernel) -> torch.Tensor:
    """``acc - za sum_k w_ok - zw_o sum_k x_mk + K za zw_o`` in the conv output layout (N, O, oh, ow)."""
    if za == 0 and not bool(zw.any()):
        return acc
    o = w.shape[0]
    k = w[0].numel()
    sw = w.to(torch.float64).reshape(o, -1).sum(1).reshape(1, o, 1, 1)
    out = acc - za * sw + k * za * zw.reshape(1, o, 1, 1)
    if bool(zw.any()):
        geo = getattr(kern, "geo", None)
        assert geo is not None
        g = geo.groups
        xp = F.pad(x.to(torch.float64), geo.pads, value=float(za)) if any(geo.pads) else x.to(torch.float64)
        ones = torch.ones(g, x.shape[1] // g, *geo.kernel, dtype=torch.float64, device=x.device)
        sx = F.conv2d(xp, ones, None, geo.stride, 0, geo.dilation, g).repeat_interleave(o // g, dim=1)
        out = out - sx * zw.reshape(1, o, 1, 1)
    return out


def dequantize_output(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``acc * scale + bias`` in float32 (the one formula emulation and integer reference share).

    ``acc`` holds exact integers (any dtype); it and ``scale`` are rounded to float32 once, so the
    result depends only on the integer values. ``scale`` is laid out like the output channels of ``acc``
    ((O, 1, 1) for a conv, (O,) for a linear layer); the bias follows the same layout."""
    out = acc.to(torch.float32) * scale.to(torch.float32)
    if bias is not None:
        shape = [-1] + [1] * (scale.dim() - 1) if scale.dim() > 0 else [-1]
        out += bias.detach().to(torch.float32).reshape(shape)
    return out


def _zero_point_fix(acc: torch.Tensor, x: torch.Tensor, w: torch.Tensor, za: float, zw: torch.Tensor) -> torch.Tensor:
    if za == 0 and not bool(zw.any()):
        return acc
    k = x.shape[1]
    sw = w.to(torch.float64).sum(1)
    sx = x.to(torch.float64).sum(1, keepdim=True)
    return acc - za * sw[None, :] - sx * zw[None, :] + k * za * zw[None, :]


def approximable_layers(model: nn.Module) -> list[str]:
    """Names of the quantized layers (plain or already approximate) an assignment may name, in order."""
    names: list[str] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, ApproxLayer):
            inside.append(name)
            names.append(name)
        elif isinstance(m, QuantLayer):
            names.append(name)
    return names


def approx_layers(model: nn.Module) -> Iterator[tuple[str, ApproxLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, ApproxLayer):
            yield name, m


def assignment_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{layer: {"name": multiplier, "relative_power": p}}`` of an approximate model (the flow artifact)."""
    return {n: {"name": m.multiplier_name, "relative_power": m.relative_power} for n, m in approx_layers(model)}


def approximate_model(model: nn.Module, assignment: Mapping[str, Multiplier | str], *,
                      inplace: bool = False, method: Method = "auto") -> nn.Module:
    """A copy of ``model`` (or ``model`` itself) whose named quantized layers use the given multipliers.

    Layers already approximate are re-assigned; layers not named keep their current form. ``method``
    is the accumulation kernel of :class:`ApproxLayer` (every choice gives the same bits).
    """
    out = model if inplace else copy.deepcopy(model)
    known = set(approximable_layers(out))
    unknown = sorted(set(assignment) - known)
    if unknown:
        raise StageError(f"no quantized layer named {', '.join(map(repr, unknown))}; quantized layers are: "
                         f"{', '.join(sorted(known)) or '(none: quantize the model first)'}")
    for name, mult in assignment.items():
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = getattr(parent, attr)
        if isinstance(layer, ApproxLayer):
            layer = layer.layer
        setattr(parent, attr, ApproxLayer(layer, mult, name, method=method).to(layer.weight.device))
    return out
