"""Fault targets on a model: weights (in place, restored by saving only the touched elements) and
activations (forward hooks). Every target is a context manager that undoes itself on exit.

A layer's weights are seen through its storage format: ``codes`` (the integer fixed-point codes of a
quantized layer, or of a float layer quantized for the campaign with ``code_spec``) or ``float32``.
Inside :func:`stored_weights` each targeted layer computes with exactly its stored values
(dequantized codes), so a flipped code acts as it would in hardware: the scale stays fixed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crosslayer.errors import ConfigError, StageError
from crosslayer.quant import FixedPointSpec, QuantizedTensor, QuantLayer, quantize_tensor
from crosslayer.resilience.faults import FLOAT32, WordFormat, code_format, flip_bits, from_words, stuck_bits, to_words

__all__ = ["LayerWeights", "Representation", "activation_hooks", "fault_layers", "patched_weights",
           "resolve_layers", "stored_weights"]

Representation = Literal["auto", "codes", "float32"]


def fault_layers(model: nn.Module) -> list[str]:
    """Names of the layers that can be targeted: every Conv2d / Linear (quantized or not)."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """``layers`` checked against the model (all targetable layers when empty / None)."""
    names = fault_layers(model)
    if not names:
        raise StageError("the model has no Conv2d or Linear layer to inject faults into")
    if not layers:
        return names
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ConfigError(f"layer {', '.join(map(repr, unknown))} does not exist; layers are: {', '.join(names)}")
    return list(dict.fromkeys(layers))


@dataclass
class LayerWeights:
    """One targeted layer: its module, storage format, and codes (None when stored as float32)."""

    name: str
    module: nn.Module
    fmt: WordFormat
    codes: QuantizedTensor | None

    @property
    def weight(self) -> torch.Tensor:
        w: torch.Tensor = self.module.weight  # type: ignore[assignment]
        return w

    def stored(self) -> torch.Tensor:
        """The stored words of the weights (codes, or float32 values)."""
        return self.codes.codes if self.codes is not None else self.weight.detach()

    def values_of(self, words_or_codes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Float weight values of stored entries ``words_or_codes`` found at flat positions ``index``."""
        if self.codes is None:
            return words_or_codes.to(torch.float32)
        shape = self.codes.codes.shape
        scale = torch.broadcast_to(self.codes.scale, shape).reshape(-1)[index]
        zp = torch.broadcast_to(self.codes.zero_point, shape).reshape(-1)[index]
        return (words_or_codes.to(torch.float32) - zp) * scale

    def faulty_values(self, index: torch.Tensor, bit: torch.Tensor,
                      op: Literal["flip", "stuck0", "stuck1"] = "flip") -> torch.Tensor:
        """New float values of the elements ``index`` after ``op`` on bit ``bit`` (one fault per entry)."""
        stored = self.stored().reshape(-1)[index]
        if op == "flip":
            new = from_words(to_words(stored, self.fmt) ^ (torch.ones_like(bit) << bit), self.fmt)
        else:
            ar = torch.arange(index.numel())
            new = stuck_bits(stored, self.fmt, ar, bit, 1 if op == "stuck1" else 0)
        return self.values_of(new, index)

    def flipped_tensor(self, index: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
        """All weights as floats with every listed ``(index, bit)`` flipped at once (multiple faults)."""
        new = flip_bits(self.stored(), self.fmt, index, bit).reshape(-1)
        return self.values_of(new, torch.arange(new.numel()))


def _layer_format(name: str, m: nn.Module, representation: Representation,
                  code_spec: FixedPointSpec | None) -> tuple[WordFormat, QuantizedTensor | None]:
    spec = m.weight_spec if isinstance(m, QuantLayer) else None
    if representation == "float32" or (representation == "auto" and spec is None):
        return FLOAT32, None
    if isinstance(m, QuantLayer) and spec is not None:
        return code_format(spec), m.weight_codes()  # the quantization contract's own codes
    spec = code_spec
    if spec is None:
        raise StageError(f"layer {name!r} has no integer codes: quantize the model first, "
                         "or give the code width (code_bits) for a float model, or use representation 'float32'")
    w: torch.Tensor = m.weight  # type: ignore[assignment]
    codes = quantize_tensor(w.detach(), spec)
    return code_format(spec), codes


@contextlib.contextmanager
def stored_weights(model: nn.Module, layers: Sequence[str] | None = None, representation: Representation = "auto",
                   code_spec: FixedPointSpec | None = None) -> Iterator[dict[str, LayerWeights]]:
    """Make the targeted layers compute with their stored values; restore weights and specs on exit.

    ``auto`` uses the codes of quantized layers and float32 for the rest; ``codes`` requires codes
    (quantizing float layers with ``code_spec`` for the campaign); ``float32`` flips IEEE-754 bits.
    """
    if representation not in ("auto", "codes", "float32"):
        raise ConfigError(f"representation = {representation!r}; allowed auto, codes, float32")
    names = resolve_layers(model, layers)
    saved: list[tuple[nn.Module, torch.Tensor, FixedPointSpec | None]] = []
    out: dict[str, LayerWeights] = {}
    try:
        for name in names:
            m = model.get_submodule(name)
            fmt, codes = _layer_format(name, m, representation, code_spec)
            w: torch.Tensor = m.weight  # type: ignore[assignment]
            saved.append((m, w.detach().clone(), getattr(m, "weight_spec", None)))
            if codes is not None:
                with torch.no_grad():
                    w.copy_(codes.dequantize().to(w.dtype))
            if isinstance(m, QuantLayer):
                m.weight_spec = None  # the stored values are used as they are, no re-calibrated scale
            out[name] = LayerWeights(name, m, fmt, codes)
        yield out
    finally:
        with torch.no_grad():
            for m, w0, spec in saved:
                m.weight.copy_(w0)  # type: ignore[operator]
                if isinstance(m, QuantLayer):
                    m.weight_spec = spec


@contextlib.contextmanager
def patched_weights(weight: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> Iterator[None]:
    """Write ``values`` into the flat elements ``index`` of ``weight``; on exit restore just those."""
    flat = weight.data.view(-1)
    old = flat[index].clone()
    flat[index] = values.to(flat.dtype)
    try:
        yield
    finally:
        flat[index] = old


ActFn = Callable[[str, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def activation_hooks(model: nn.Module, layers: Sequence[str], fn: ActFn,
                     where: Literal["input", "output"] = "output") -> Iterator[None]:
    """Pass the input or output activation of each named layer through ``fn(name, x)``; hooks removed on exit."""
    names = resolve_layers(model, layers)
    handles = []
    try:
        for name in names:
            m = model.get_submodule(name)
            if where == "output":
                handles.append(m.register_forward_hook(lambda _m, _i, out, n=name: fn(n, out)))
            elif where == "input":
                handles.append(m.register_forward_pre_hook(lambda _m, inp, n=name: (fn(n, inp[0]), *inp[1:])))
            else:
                raise ConfigError(f"where = {where!r}; allowed input, output")
        yield
    finally:
        for h in handles:
            h.remove()
