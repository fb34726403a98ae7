"""Weights to conductances and back, with the device non-idealities of a :class:`CrossbarSpec`.

Pure tensor functions (no modules): :func:`map_to_conductance` (differential pair, level
quantisation), :func:`program` (variation, stuck-at devices, drift) and :func:`to_weight` (read the
pair back in weight units). :func:`weight_noise` chains them to give the weight-domain error one
programming of a layer would cause; variation-aware training injects exactly that error
(Long et al., DATE 2019), so training and inference share one noise model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crosslayer.imc.spec import CrossbarSpec

__all__ = ["Conductances", "apply_drift", "apply_stuck", "apply_variation", "map_to_conductance", "program",
           "quantize_levels", "to_weight", "weight_noise"]


@dataclass
class Conductances:
    """A programmed layer: positive and negative conductances (same shape as the weight) and the
    weight value of a full-window difference (``w = (g_pos - g_neg) * w_per_g``)."""

    g_pos: torch.Tensor
    g_neg: torch.Tensor
    w_per_g: float
    gain: float = 1.0  # drift compensation applied at read-out


def quantize_levels(g: torch.Tensor, spec: CrossbarSpec) -> torch.Tensor:
    """Snap conductances to the ``levels`` evenly spaced values of ``[g_min, g_max]``."""
    step = (spec.g_max - spec.g_min) / (spec.levels - 1)
    g = g.clamp(spec.g_min, spec.g_max)
    return spec.g_min + torch.round((g - spec.g_min) / step) * step


def map_to_conductance(w: torch.Tensor, spec: CrossbarSpec) -> Conductances:
    """Differential mapping: ``w > 0`` raises ``G+`` above ``g_min``, ``w < 0`` raises ``G-``.

    The largest ``|w|`` of the tensor takes the whole window ``g_max - g_min``; an all-zero tensor maps
    to ``g_min`` pairs.
    """
    w = w.detach().float()
    w_max = float(w.abs().max()) if w.numel() else 0.0
    window = spec.g_max - spec.g_min
    w_per_g = (w_max / window) if w_max > 0 else 1.0 / window
    g_pos = quantize_levels(spec.g_min + w.clamp(min=0) / w_per_g, spec)
    g_neg = quantize_levels(spec.g_min + (-w).clamp(min=0) / w_per_g, spec)
    return Conductances(g_pos, g_neg, w_per_g)


def _normal(shape: torch.Size, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=gen).to(device)


def apply_variation(g: torch.Tensor, sigma: float, spec: CrossbarSpec, gen: torch.Generator) -> torch.Tensor:
    """Programming variation of strength ``sigma``: log-normal (multiplicative) or Gaussian (additive,
    relative to the window); conductances never go below zero."""
    if sigma <= 0:
        return g
    z = _normal(g.shape, gen, g.device)
    if spec.variation == "lognormal":
        return g * torch.exp(sigma * z)
    return (g + sigma * (spec.g_max - spec.g_min) * z).clamp(min=0.0)


def apply_stuck(g: torch.Tensor, spec: CrossbarSpec, gen: torch.Generator) -> torch.Tensor:
    """Stuck-at-on devices read ``g_max``, stuck-off devices ``g_min`` (disjoint, at the spec's rates)."""
    if spec.stuck_on_rate <= 0 and spec.stuck_off_rate <= 0:
        return g
    u = torch.rand(g.shape, generator=gen).to(g.device)
    on = u < spec.stuck_on_rate
    off = (u >= spec.stuck_on_rate) & (u < spec.stuck_on_rate + spec.stuck_off_rate)
    return torch.where(on, torch.full_like(g, spec.g_max), torch.where(off, torch.full_like(g, spec.g_min), g))


def apply_drift(g: torch.Tensor, spec: CrossbarSpec, gen: torch.Generator) -> torch.Tensor:
    """Power-law drift ``G(t) = G(t0) * (t / t0)^-nu`` with a per-device ``nu ~ N(drift_nu, drift_nu_std^2)``
    (clipped at 0, so conductances only decay)."""
    if not spec.has_drift:
        return g
    nu = (spec.drift_nu + spec.drift_nu_std * _normal(g.shape, gen, g.device)).clamp(min=0.0)
    return g * (spec.drift_time / spec.drift_t0) ** (-nu)


def program(w: torch.Tensor, spec: CrossbarSpec, *, chip_seed: int, cycle_seed: int) -> Conductances:
    """Program ``w`` onto a crossbar: target conductances, then d2d variation and stuck-at faults drawn
    from ``chip_seed`` (the same chip always has the same bad devices), c2c variation from
    ``cycle_seed`` (each programming differs), then drift to ``spec.drift_time``."""
    target = map_to_conductance(w, spec)
    chip = torch.Generator().manual_seed(chip_seed)
    cycle = torch.Generator().manual_seed(cycle_seed)
    out = []
    for g in (target.g_pos, target.g_neg):
        g = apply_variation(g, spec.d2d_sigma, spec, chip)
        g = apply_variation(g, spec.c2c_sigma, spec, cycle)
        out.append(apply_stuck(g, spec, chip))
    gain = 1.0
    if spec.has_drift:
        before = float(out[0].sum() + out[1].sum())
        out = [apply_drift(g, spec, cycle) for g in out]
        after = float(out[0].sum() + out[1].sum())
        if spec.drift_compensation and after > 0:
            gain = before / after
    return Conductances(out[0], out[1], target.w_per_g, gain)


def to_weight(c: Conductances) -> torch.Tensor:
    """The weight a programmed pair realises (drift compensation included)."""
    return (c.g_pos - c.g_neg) * (c.w_per_g * c.gain)


def weight_noise(w: torch.Tensor, spec: CrossbarSpec, gen: torch.Generator) -> torch.Tensor:
    """The weight error of one random programming of ``w`` (level quantisation, d2d + c2c variation,
    stuck-at devices, drift), detached: add it to ``w`` for a straight-through noisy forward pass.

    The d2d and c2c parts are drawn as one variation of the combined ``spec.sigma`` (the same
    distribution for the multiplicative log-normal model, and for the additive Gaussian one up to the
    clip at zero), which halves the random draws per training step.
    """
    seeds = torch.randint(0, 2**62, (2,), generator=gen)
    one = spec if spec.c2c_sigma == 0 else spec.replace(d2d_sigma=spec.sigma, c2c_sigma=0.0)
    c = program(w, one, chip_seed=int(seeds[0]), cycle_seed=int(seeds[1]))
    return (to_weight(c).to(w.dtype) - w.detach()).detach()
