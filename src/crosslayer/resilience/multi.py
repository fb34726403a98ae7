"""Campaigns of many simultaneous faults, repeated over seeded trials:

* weight-memory bit errors at a bit-error rate per layer and for all layers together (the
  voltage-scaled weight SRAM of MATIC, Kim et al., DATE 2018): each stored bit fails independently,
  as a read flip (``flip``) or a cell stuck at a random level (``stuck``);
* bit flips in the input activations of a layer (its codes when the layer quantizes its input,
  else the float32 pattern): ``flips`` random bits per image, at a chosen bit or at random bits;
* additive Gaussian noise on a layer's output relative to its standard deviation, the
  error-resilience analysis of Hanif et al., DATE 2018, which models an approximate layer.

Each trial evaluates the whole image subset; results are mean accuracy drops with Student-t intervals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crosslayer.config import check_range
from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec, QuantLayer, dequantize, round_to_codes
from crosslayer.resilience.batched import correct_counts
from crosslayer.resilience.faults import (
    FLOAT32,
    apply_word_mask,
    ber_masks,
    check_ber,
    check_bit,
    code_format,
    flip_bits,
    gaussian_noise,
)
from crosslayer.resilience.inject import (
    Representation,
    activation_hooks,
    patched_weights,
    resolve_layers,
    stored_weights,
)
from crosslayer.resilience.stats import DROP_BOUNDS_PP, mean_interval
from crosslayer.train import progress

__all__ = ["TrialStats", "activation_bitflips", "ber_campaign", "noise_campaign"]


@dataclass(frozen=True)
class TrialStats:
    """Accuracy drop (pp) of one target at one fault level over ``trials`` seeded repetitions."""

    target: str
    level: float
    trials: int
    mean_drop_pp: float
    drop_ci: tuple[float, float]
    max_drop_pp: float
    mean_faults: float


def _stats(target: str, level: float, drops: list[float], faults: list[int], confidence: float) -> TrialStats:
    m, lo, hi = mean_interval(drops, confidence, DROP_BOUNDS_PP)
    return TrialStats(target, level, len(drops), m, (lo, hi), max(drops), sum(faults) / max(1, len(faults)))


def _check_trials(trials: int, confidence: float) -> None:
    check_range("trials", trials, 1)
    check_range("confidence", confidence, 0.0, 1.0, lo_open=True, hi_open=True)


def ber_campaign(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, bers: Sequence[float],
                 layers: Sequence[str] | None = None, include_all: bool = True, trials: int = 3,
                 mode: Literal["flip", "stuck"] = "flip", representation: Representation = "auto",
                 code_spec: FixedPointSpec | None = None, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, list[TrialStats]]:
    """Weight-memory bit errors at each BER, in each layer alone and (``include_all``) in all at once.

    Returns the clean accuracy of the stored model and one :class:`TrialStats` per (target, BER).
    """
    for b in bers:
        check_ber(b, "bers")
    if mode not in ("flip", "stuck"):
        raise ConfigError(f"mode = {mode!r}; allowed flip, stuck")
    _check_trials(trials, confidence)
    gen = torch.Generator().manual_seed(seed)
    out: list[TrialStats] = []
    with stored_weights(model, layers, representation, code_spec) as lw:
        base = correct_counts(model, images, labels)
        targets: list[tuple[str, list[str]]] = [(n, [n]) for n in lw]
        if include_all and len(lw) > 1:
            targets.append(("all", list(lw)))
        with progress() as bar:
            task = bar.add_task("BER campaign", total=len(targets) * len(bers) * trials, info="")
            for label, names in targets:
                for ber in bers:
                    drops, faults = [], []
                    for _ in range(trials):
                        with contextlib.ExitStack() as stack:
                            nbits = 0
                            for n in names:
                                w = lw[n]
                                masks = ber_masks(w.weight.numel(), w.fmt, float(ber), gen)
                                touched = masks.nonzero().reshape(-1)
                                nbits += int(((masks[touched, None] >> torch.arange(w.fmt.width)) & 1).sum())
                                new = apply_word_mask(w.stored().reshape(-1)[touched], w.fmt, masks[touched], mode,
                                                      gen)
                                stack.enter_context(patched_weights(w.weight, touched, w.values_of(new, touched)))
                            c = correct_counts(model, images, labels)
                        drops.append((base - c) * 100.0 / len(labels))
                        faults.append(nbits)
                        bar.advance(task)
                    out.append(_stats(label, float(ber), drops, faults, confidence))
    return base / len(labels), out


def noise_campaign(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, sigma: float,
                   layers: Sequence[str] | None = None, trials: int = 3, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, list[TrialStats]]:
    """Gaussian noise of ``sigma`` times the output's standard deviation on each layer's output, one layer
    at a time (Hanif et al., DATE 2018)."""
    check_range("sigma", sigma, 0.0)
    _check_trials(trials, confidence)
    names = resolve_layers(model, layers)
    gen = torch.Generator().manual_seed(seed)
    base = correct_counts(model, images, labels)
    out = []
    for name in names:
        drops = []
        for _ in range(trials):
            with activation_hooks(model, [name], lambda _n, y: gaussian_noise(y, sigma, gen), "output"):
                drops.append((base - correct_counts(model, images, labels)) * 100.0 / len(labels))
        out.append(_stats(name, sigma, drops, [0] * trials, confidence))
    return base / len(labels), out


def activation_bitflips(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        layers: Sequence[str] | None = None, flips: int = 1, bit: int | None = None,
                        ber: float | None = None, trials: int = 3, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, list[TrialStats]]:
    """``flips`` random bit flips per image (or every bit failing at rate ``ber``) in the input
    activations of each layer, one layer at a time.

    A quantized layer with a calibrated input range is hit in its input codes (then dequantized);
    any other layer in the float32 pattern of its input. ``bit`` fixes the bit position.
    """
    check_range("flips", flips, 1)
    if ber is not None:
        check_ber(ber)
    _check_trials(trials, confidence)
    names = resolve_layers(model, layers)
    gen = torch.Generator().manual_seed(seed)
    base = correct_counts(model, images, labels)
    out = []
    for name in names:
        hit = _InputFlipper(model.get_submodule(name), flips, bit, ber, gen)
        drops = []
        for _ in range(trials):
            hit.faults.append(0)
            with activation_hooks(model, [name], hit, "input"):
                drops.append((base - correct_counts(model, images, labels)) * 100.0 / len(labels))
        level = float(ber) if ber is not None else float(flips)
        out.append(_stats(name, level, drops, [int(c) for c in hit.faults] if ber is not None
                          else [flips * len(labels)] * trials, confidence))
    return base / len(labels), out


class _InputFlipper:
    """Hook function flipping bits of a layer's input: ``flips`` random bits per image, or each bit at
    rate ``ber``; in the input codes when the layer quantizes its input, else in float32."""

    def __init__(self, m: nn.Module, flips: int, bit: int | None, ber: float | None, gen: torch.Generator) -> None:
        self.m, self.flips, self.bit, self.ber, self.gen = m, flips, bit, ber, gen
        self.spec = m.act_spec if isinstance(m, QuantLayer) and m.act_calibrated else None
        self.fmt = code_format(self.spec) if self.spec is not None else FLOAT32
        if bit is not None:
            check_bit(bit, self.fmt)
        self.faults: list[int] = []  # bit errors per trial (BER mode), one entry per forward pass summed

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        if self.ber is not None:
            masks = ber_masks(x.numel(), self.fmt, self.ber, self.gen)
            if self.bit is not None:
                masks &= 1 << self.bit
            self.faults[-1] += int(((masks[:, None] >> torch.arange(self.fmt.width)) & 1).sum())
            return apply_word_mask(x, self.fmt, masks)
        per = x[0].numel()
        idx = (torch.randint(0, per, (x.shape[0], self.flips), generator=self.gen)
               + per * torch.arange(x.shape[0])[:, None]).reshape(-1)
        bits = (torch.full_like(idx, self.bit) if self.bit is not None
                else torch.randint(0, self.fmt.width, idx.shape, generator=self.gen))
        return flip_bits(x, self.fmt, idx, bits)

    def __call__(self, _n: str, x: torch.Tensor) -> torch.Tensor:
        if self.spec is None:
            return self._flip(x)
        assert isinstance(self.m, QuantLayer)
        scale, zp = self.m.act_scale()
        codes = round_to_codes(x, scale, zp, self.spec.bits, self.spec.signed)
        return dequantize(self._flip(codes), scale, zp)
