"""Quantized Conv2d / Linear: the contract every later stage reads.

A quantized layer is an ``nn.Conv2d`` or ``nn.Linear`` subclass carrying ``weight_spec`` (how its
weights are coded) and optionally ``act_spec`` (how its *input* activations are coded, with a range
calibrated by observing data). Its forward pass fake-quantizes both (straight-through gradient, so
the same layer serves post-training quantization and quantization-aware training).
``weight_codes()`` and ``input_codes(x)`` give the integer codes that resilience analysis,
approximate multipliers, in-memory computing and the packed model file operate on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.checkpoint import LayerCodec, register_layer_codec
from crosslayer.config import from_mapping, to_mapping
from crosslayer.errors import StageError
from crosslayer.quant.fixed_point import FixedPointSpec, QuantizedTensor, fake_quantize, quantize_tensor, scale_for

__all__ = ["QuantConv2d", "QuantLayer", "QuantLinear", "calibrating", "iter_quant_layers", "quantize_model",
           "weight_codes"]


class QuantLayer(nn.Module):
    """Mixin state of a quantized layer (weights and, optionally, input activations)."""

    weight_spec: FixedPointSpec | None
    act_spec: FixedPointSpec | None
    act_lo: torch.Tensor
    act_hi: torch.Tensor

    def _init_quant(self, weight_spec: FixedPointSpec | None, act_spec: FixedPointSpec | None) -> None:
        self.weight_spec = weight_spec
        self.act_spec = act_spec
        self.observing = False
        self.register_buffer("act_lo", torch.tensor(float("inf")))
        self.register_buffer("act_hi", torch.tensor(float("-inf")))

    @property
    def act_calibrated(self) -> bool:
        return bool(torch.isfinite(self.act_lo)) and bool(torch.isfinite(self.act_hi))

    def _observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.act_lo = torch.minimum(self.act_lo, x.detach().min().float())
            self.act_hi = torch.maximum(self.act_hi, x.detach().max().float())

    def act_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.act_spec is None:
            raise StageError("layer has no activation quantization")
        if not self.act_calibrated:
            raise StageError("activation range not calibrated: run calibration data through the model first")
        dummy = torch.zeros(1, device=self.act_lo.device)
        scale, zp = scale_for(dummy, self.act_spec, self.act_lo, self.act_hi)
        return scale.reshape(()), zp.reshape(())

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_spec is None:
            return x
        if self.observing:
            self._observe(x)
            return x
        if not self.act_calibrated:
            return x
        scale, zp = self.act_scale()
        return fake_quantize(x, self.act_spec, scale, zp)

    def quant_weight(self) -> torch.Tensor:
        w: torch.Tensor = self.weight  # type: ignore[assignment]
        return w if self.weight_spec is None else fake_quantize(w, self.weight_spec)

    def weight_codes(self) -> QuantizedTensor:
        if self.weight_spec is None:
            raise StageError("layer weights are not quantized")
        return quantize_tensor(self.weight, self.weight_spec)  # type: ignore[arg-type]

    def input_codes(self, x: torch.Tensor) -> QuantizedTensor:
        scale, zp = self.act_scale()
        assert self.act_spec is not None
        return quantize_tensor(x, self.act_spec, scale, zp)


class QuantLinear(nn.Linear, QuantLayer):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_spec: FixedPointSpec | None = None, act_spec: FixedPointSpec | None = None) -> None:
        super().__init__(in_features, out_features, bias)
        self._init_quant(weight_spec, act_spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quant_input(x), self.quant_weight(), self.bias)


class QuantConv2d(nn.Conv2d, QuantLayer):
    def __init__(self, *args: Any, weight_spec: FixedPointSpec | None = None,
                 act_spec: FixedPointSpec | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(weight_spec, act_spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quant_input(x), self.quant_weight(), self.bias)


def _swap(layer: nn.Module, weight_spec: FixedPointSpec | None, act_spec: FixedPointSpec | None) -> QuantLayer:
    q: QuantLayer
    if isinstance(layer, nn.Linear):
        q = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None,
                        weight_spec=weight_spec, act_spec=act_spec)
    elif isinstance(layer, nn.Conv2d):
        q = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                        bias=layer.bias is not None, padding_mode=layer.padding_mode,
                        weight_spec=weight_spec, act_spec=act_spec)
    else:
        raise StageError(f"cannot quantize layer of type {type(layer).__name__}")
    q.load_state_dict(layer.state_dict(), strict=False)
    return q.to(layer.weight.device)


def quantize_model(model: nn.Module, weight_spec: FixedPointSpec | Mapping[str, FixedPointSpec | None] | None,
                   act_spec: FixedPointSpec | Mapping[str, FixedPointSpec | None] | None = None,
                   layers: Iterable[str] | None = None) -> nn.Module:
    """Replace Conv2d / Linear layers in place by quantized ones (all, or those named in ``layers``).

    Specs may be one for all layers or a dict per layer name (per-layer bit widths).
    Returns the same model object.
    """
    names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not names:
        raise StageError("the model has no Conv2d or Linear layer to quantize")
    chosen = set(layers) if layers is not None else names
    unknown = sorted(chosen - names)
    if unknown:
        raise StageError(f"no quantizable layer named {', '.join(map(repr, unknown))}; "
                         f"layers are: {', '.join(sorted(names))}")
    for name in sorted(chosen):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, attr)
        ws = weight_spec.get(name) if isinstance(weight_spec, Mapping) else weight_spec
        as_ = act_spec.get(name) if isinstance(act_spec, Mapping) else act_spec
        if isinstance(layer, QuantLayer):
            layer.weight_spec, layer.act_spec = ws, as_
        else:
            setattr(parent, attr, _swap(layer, ws, as_))
    return model


def iter_quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer):
            yield name, m


def weight_codes(model: nn.Module, name: str) -> QuantizedTensor:
    """Integer weight codes of layer ``name``; a clear error when it is not quantized yet."""
    try:
        m = model.get_submodule(name)
    except AttributeError as exc:
        raise StageError(f"model has no layer named {name!r}") from exc
    if not isinstance(m, QuantLayer) or m.weight_spec is None:
        raise StageError(f"layer {name!r} has no integer codes: quantize the model first")
    return m.weight_codes()


class calibrating:
    """Context manager: quantized layers record their input range instead of quantizing it."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for _, m in iter_quant_layers(model)]

    def __enter__(self) -> calibrating:
        for m in self.layers:
            m.observing = True
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.layers:
            m.observing = False


def _spec_settings(spec: FixedPointSpec | None) -> dict[str, Any] | None:
    return None if spec is None else to_mapping(spec)


def _spec_from(settings: Any, what: str) -> FixedPointSpec | None:
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise StageError(f"{what} of a quantized layer must be a table")
    return from_mapping(FixedPointSpec, settings, section=what)


def _encode_quant(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, QuantLayer)
    return {"weight_spec": _spec_settings(m.weight_spec), "act_spec": _spec_settings(m.act_spec)}


def _decode_quant(settings: dict[str, Any], original: nn.Module, child: Any) -> nn.Module:
    if not isinstance(original, (nn.Conv2d, nn.Linear)):
        raise StageError(f"a quantized layer must replace a Conv2d or Linear, not a {type(original).__name__}")
    return _swap(original, _spec_from(settings.get("weight_spec"), "weight_spec"),
                 _spec_from(settings.get("act_spec"), "act_spec"))


register_layer_codec(LayerCodec("quant.linear", QuantLinear, _encode_quant, _decode_quant))
register_layer_codec(LayerCodec("quant.conv2d", QuantConv2d, _encode_quant, _decode_quant))
