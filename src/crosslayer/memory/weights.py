"""A model's weights as a voltage-scaled memory holds them: which tensors, how they are coded, and a
context manager that makes the model compute with a chip's faulty words.

Targets are the weights of every Conv2d / Linear (attention's output projection included) and the packed
input projection of ``nn.MultiheadAttention``. A quantized layer (:mod:`crosslayer.quant`) is stored as
its own integer codes (``weight_codes()``); any other tensor as the codes of ``code_spec`` (default: 8-bit
symmetric, per output channel), i.e. the memory holds int8 words either way. Biases and normalisation
parameters are not in the modelled memory.

Inside :func:`chip_weights` each target is a ``torch.nn.utils.parametrize`` parametrization, so every
module that reads ``.weight`` (functional code in ``forward`` included) sees the stored value: the codes
of the current float weight with the chip's failing bits applied, dequantized with the same scale. The
gradient passes straight through to the float weight (the straight-through estimator of the
fake-quantized weight, Bengio et al., 2013), which is what memory-adaptive training needs; a quantized
layer's own weight quantization is switched off meanwhile (the value is already the stored one). Leaving
the block restores the plain parameters and specs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from crosslayer.errors import ConfigError, StageError
from crosslayer.memory.chip import ChipMap, apply_faults
from crosslayer.quant import FixedPointSpec, QuantLayer, fake_quantize, quantize_tensor
from crosslayer.resilience.faults import WordFormat, code_format

__all__ = ["DEFAULT_CODE_SPEC", "WeightTarget", "chip_weights", "memory_layout", "weight_targets"]

DEFAULT_CODE_SPEC = FixedPointSpec(bits=8, per_channel=True)


@dataclass(frozen=True)
class WeightTarget:
    """One stored tensor: ``name`` (module name, or ``module.param`` for attention), the module, the
    parameter name and the fixed-point spec of its words."""

    name: str
    module: nn.Module
    param: str
    spec: FixedPointSpec

    @property
    def fmt(self) -> WordFormat:
        return code_format(self.spec)

    @property
    def numel(self) -> int:
        p: torch.Tensor = getattr(self.module, self.param)
        return p.numel()


def weight_targets(model: nn.Module, code_spec: FixedPointSpec | None = None) -> list[WeightTarget]:
    """The stored weight tensors of ``model`` in memory order (module order)."""
    spec0 = code_spec or DEFAULT_CODE_SPEC
    out: list[WeightTarget] = []
    for name, m in model.named_modules():
        if type(m).__name__ in ("ApproxLayer", "CuredLayer", "IntegerReference"):
            raise StageError("the model holds approximate-multiplier layers; give the quantized model (weight "
                             "memory faults act on the stored codes before the multiplier)")
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            own = m.weight_spec if isinstance(m, QuantLayer) else None
            out.append(WeightTarget(name, m, "weight", own if own is not None else spec0))
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            out.append(WeightTarget(f"{name}.in_proj_weight" if name else "in_proj_weight", m, "in_proj_weight",
                                    spec0))
    if not out:
        raise StageError("the model has no Conv2d, Linear or attention weights to store in a weight memory")
    widths = {t.spec.bits for t in out}
    if len(widths) > 1:
        raise StageError(f"the weight memory needs one word width; the model's layers use {sorted(widths)} bits "
                         "(quantize every layer to the same weight width)")
    return out


def memory_layout(targets: list[WeightTarget]) -> tuple[list[tuple[str, int]], int]:
    """``([(name, words), ...], word width)`` for :func:`crosslayer.memory.chip.sample_chip`."""
    return [(t.name, t.numel) for t in targets], targets[0].spec.bits


class _StoredWeight(nn.Module):
    """Parametrization: float weight -> its words -> the chip's read-back -> dequantized (STE gradient)."""

    def __init__(self, target: WeightTarget, chip: ChipMap | None, voltage: float | Mapping[str, float]) -> None:
        super().__init__()
        self.name, self.spec, self.fmt = target.name, target.spec, target.fmt
        self.chip, self.voltage = chip, voltage

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        q = quantize_tensor(w.detach(), spec)
        faulty = q.codes if self.chip is None else apply_faults(q.codes, self.fmt, self.chip, self.name, self.voltage)
        faulty = faulty.to(w.device)
        stored = (faulty.to(torch.float32) - q.zero_point) * q.scale
        fq = fake_quantize(w, spec)
        return stored.to(fq.dtype) + (fq - fq.detach())  # value: stored exactly; gradient: fake-quantized


@contextlib.contextmanager
def chip_weights(model: nn.Module, chip: ChipMap | None, voltage: float | Mapping[str, float] = 0.0,
                 code_spec: FixedPointSpec | None = None) -> Iterator[list[WeightTarget]]:
    """Make ``model`` compute with the weights ``chip`` reads back at ``voltage`` (one voltage, or one per
    tensor name; ``chip=None``: the stored words without faults); restored on exit. Yields the targets."""
    targets = weight_targets(model, code_spec)
    missing = [t.name for t in targets if chip is not None and t.name not in chip.layers]
    if missing:
        raise ConfigError(f"the chip map was drawn for another model: no fault map for {', '.join(missing)}")
    if chip is not None and isinstance(voltage, Mapping):
        absent = [t.name for t in targets if t.name not in voltage]
        if absent:
            raise ConfigError(f"no voltage given for {', '.join(absent)}")
    specs: list[tuple[QuantLayer, FixedPointSpec | None]] = []
    done: list[WeightTarget] = []
    orders = {id(t.module): (t.module, list(t.module._parameters)) for t in targets}
    try:
        for t in targets:
            parametrize.register_parametrization(t.module, t.param, _StoredWeight(t, chip, voltage))
            done.append(t)
            if isinstance(t.module, QuantLayer):
                specs.append((t.module, t.module.weight_spec))
                t.module.weight_spec = None  # the parametrized value is already the stored one
        yield targets
    finally:
        for t in done:
            parametrize.remove_parametrizations(t.module, t.param, leave_parametrized=False)
        for m, names in orders.values():  # the parameters in their first order: state_dict() unchanged
            params = m._parameters
            keep = [n for n in names if n in params] + [n for n in params if n not in names]
            m._parameters = type(params)((n, params[n]) for n in keep)
        for m, spec in specs:
            m.weight_spec = spec
