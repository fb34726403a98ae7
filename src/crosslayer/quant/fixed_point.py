"""Fixed-point arithmetic as pure tensor functions: integer ranges, scales (symmetric / asymmetric,
per tensor / per channel, or an explicit Qm.n format), quantize, dequantize, and fake quantization
with a straight-through estimator (Bengio et al., 2013; Jacob et al., CVPR 2018 for the affine scheme).

Codes are two's-complement integers of ``bits`` width (signed) or ``[0, 2^bits - 1]`` (unsigned),
held in int32 tensors; ``value = (code - zero_point) * scale``. Two non-uniform weight schemes share
the same contract (``zero_point = 0``): ``scheme="binary"`` (1 bit, codes in {-1, +1}, XNOR-Net) and
``scheme="ternary"`` (2 bits, codes in {-1, 0, +1}, TWN); see :mod:`crosslayer.quant.lowbit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.quant.lowbit import binary_codes, fake_binary, fake_ternary, ternary_codes

__all__ = [
    "SCHEMES",
    "FixedPointSpec",
    "QuantizedTensor",
    "dequantize",
    "fake_quantize",
    "qformat",
    "qrange",
    "quantize_tensor",
    "round_to_codes",
    "scale_for",
]

SCHEMES = ("uniform", "binary", "ternary")


@dataclass(frozen=True, kw_only=True)
class FixedPointSpec(Config):
    """How one tensor is quantized.

    ``frac_bits`` set means the Qm.n format: ``scale = 2**-frac_bits`` and ``bits = 1 + m + n``
    (signed), so the integer bits are ``bits - 1 - frac_bits``; otherwise the scale is calibrated.
    ``scheme`` is ``uniform`` (the fixed-point grid), ``binary`` (bits = 1, XNOR-Net) or ``ternary``
    (bits = 2, TWN); the two low-bit schemes are signed and symmetric, with a calibrated scale.
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    per_channel: bool = False
    channel_axis: int = 0
    frac_bits: int | None = None
    scheme: Literal["uniform", "binary", "ternary"] = "uniform"

    def validate(self) -> None:
        check_range("bits", self.bits, 1, 16)
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme = {self.scheme!r} is not allowed; choose one of {', '.join(SCHEMES)}")
        if self.scheme != "uniform":
            need = 1 if self.scheme == "binary" else 2
            if self.bits != need or not self.signed or not self.symmetric or self.frac_bits is not None:
                raise ConfigError(f"scheme = {self.scheme!r} needs bits = {need}, signed = true, symmetric = true "
                                  f"and no frac_bits; got bits = {self.bits}")
            return
        if self.bits == 1:
            raise ConfigError("bits = 1 is only allowed with scheme = 'binary' (weights +-alpha); "
                              "a uniform grid needs 2-16 bits")
        if self.frac_bits is not None:
            if not self.symmetric:
                raise ConfigError("frac_bits (Qm.n) needs symmetric = true: the format has no zero point")
            check_range("frac_bits", self.frac_bits, -32, 32)


    @property
    def int_bits(self) -> int | None:
        """m of Qm.n (sign bit excluded), or None when the scale is calibrated."""
        if self.frac_bits is None:
            return None
        return self.bits - (1 if self.signed else 0) - self.frac_bits


def qformat(int_bits: int, frac_bits: int, signed: bool = True) -> FixedPointSpec:
    """The Qm.n spec with ``m = int_bits`` integer and ``n = frac_bits`` fraction bits (plus a sign bit)."""
    check_range("int_bits", int_bits, 0, 16)
    check_range("frac_bits", frac_bits, 0, 16)
    return FixedPointSpec(bits=int_bits + frac_bits + (1 if signed else 0), signed=signed, frac_bits=frac_bits)


def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    """Smallest and largest code of a ``bits``-wide integer."""
    check_range("bits", bits, 1, 32)
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@dataclass
class QuantizedTensor:
    """Integer codes with their scale and zero point (broadcastable to ``codes``)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    spec: FixedPointSpec

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scale, self.zero_point)


def _reduce_dims(x: torch.Tensor, spec: FixedPointSpec) -> tuple[list[int], list[int]]:
    if not spec.per_channel or x.dim() == 0:
        return list(range(x.dim())), [1] * x.dim()
    axis = spec.channel_axis % x.dim()
    dims = [d for d in range(x.dim()) if d != axis]
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return dims, shape


def scale_for(x: torch.Tensor, spec: FixedPointSpec, lo: torch.Tensor | None = None,
              hi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point mapping the observed range of ``x`` (or ``[lo, hi]``) onto the code range."""
    if spec.scheme != "uniform":
        _, alpha = _lowbit_codes(x, spec)
        return alpha, torch.zeros_like(alpha)
    qmin, qmax = qrange(spec.bits, spec.signed)
    dims, shape = _reduce_dims(x, spec)
    if spec.frac_bits is not None:
        scale = torch.full(shape, 2.0 ** -spec.frac_bits, dtype=torch.float32, device=x.device)
        return scale, torch.zeros(shape, dtype=torch.float32, device=x.device)
    xd = x.detach().float()
    if lo is None or hi is None:
        lo = xd.amin(dim=dims, keepdim=True) if dims else xd.reshape(shape)
        hi = xd.amax(dim=dims, keepdim=True) if dims else xd.reshape(shape)
    else:
        lo, hi = _as_shape(lo, shape, x.device), _as_shape(hi, shape, x.device)
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    tiny = torch.finfo(torch.float32).tiny
    if spec.symmetric:
        amax = torch.maximum(hi, -lo)
        scale = torch.clamp(amax / max(qmax, 1), min=tiny)
        zp = torch.zeros_like(scale)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=tiny)
        zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale, zp


def _as_shape(t: torch.Tensor | float, shape: list[int], device: torch.device) -> torch.Tensor:
    v = torch.as_tensor(t, dtype=torch.float32, device=device)
    return v.reshape([1] * len(shape)) if v.numel() == 1 else v.reshape(shape)


def round_to_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int,
                   signed: bool = True) -> torch.Tensor:
    """Round to the nearest code and saturate: ``clamp(round(x / scale) + zp)`` as int32."""
    qmin, qmax = qrange(bits, signed)
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax).to(torch.int32)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (codes.to(torch.float32) - zero_point) * scale


def quantize_tensor(x: torch.Tensor, spec: FixedPointSpec, scale: torch.Tensor | None = None,
                    zero_point: torch.Tensor | None = None) -> QuantizedTensor:
    """Codes of ``x`` under ``spec`` (scale calibrated from ``x`` unless given)."""
    if spec.scheme != "uniform":
        codes, alpha = _lowbit_codes(x, spec)
        s = alpha if scale is None else scale
        return QuantizedTensor(codes, s, torch.zeros_like(s), spec)
    if scale is None or zero_point is None:
        scale, zero_point = scale_for(x, spec)
    codes = round_to_codes(x.detach(), scale, zero_point, spec.bits, spec.signed)
    return QuantizedTensor(codes, scale, zero_point, spec)


class _RoundSTE(torch.autograd.Function):
    """Fake quantization whose backward passes the gradient straight through inside the range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int,
                qmax: int) -> torch.Tensor:
        q = torch.round(x / scale) + zp
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zp) * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, spec: FixedPointSpec, scale: torch.Tensor | None = None,
                  zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize ``x`` (float in, float out) with a straight-through gradient."""
    if spec.scheme == "binary":
        return fake_binary(x, spec.per_channel, spec.channel_axis, scale)
    if spec.scheme == "ternary":
        return fake_ternary(x, spec.per_channel, spec.channel_axis, scale)
    if scale is None or zero_point is None:
        scale, zero_point = scale_for(x, spec)
    qmin, qmax = qrange(spec.bits, spec.signed)
    return _RoundSTE.apply(x, scale, zero_point, qmin, qmax)


def _lowbit_codes(x: torch.Tensor, spec: FixedPointSpec) -> tuple[torch.Tensor, torch.Tensor]:
    fn = binary_codes if spec.scheme == "binary" else ternary_codes
    return fn(x, spec.per_channel, spec.channel_axis)
