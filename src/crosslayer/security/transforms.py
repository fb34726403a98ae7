"""Input-transformation defences and the BPDA switch that an adaptive attacker uses against them.

* :class:`InputQuantization` — QuSecNets (Khalid, Hanif, Rehman, Shafique, "QuSecNets: Quantization-
  based Defense Mechanism for Securing Deep Neural Network against Adversarial Attacks", IOLTS 2019):
  map each pixel to one of ``levels`` values; fixed, evenly spaced thresholds or learned ones
  (:func:`learn_thresholds`); optional random dither makes it a randomised defence (attacked with EOT).
* :class:`MedianFilter` and :class:`LowPassFilter` — FAdeML (Khalid, Hanif, Rehman, Qadir, Shafique,
  "FAdeML: Understanding the Impact of Pre-Processing Noise Filtering on Adversarial Machine Learning",
  DATE 2019): pre-processing noise filters.

BPDA (Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018):
inside ``with bpda(model):`` every non-differentiable transform passes gradients straight through
(forward: the transform; backward: identity), so a gradient attacker sees through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from crosslayer.errors import ConfigError

__all__ = ["Defended", "InputQuantization", "InputTransform", "LowPassFilter", "MedianFilter", "bpda"]


class InputTransform(nn.Module):
    """Base of input defences: ``transform(x)``; ``random`` says whether EOT is needed against it."""

    random: bool = False
    differentiable: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.bpda = False

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.transform(x)
        if self.bpda and not self.differentiable:
            return x + (out - x).detach()  # forward = transform, backward = identity
        return out


class InputQuantization(InputTransform):
    """Pixel quantization to ``levels`` values ``0, 1/(L-1), ..., 1`` at thresholds (default mid-points)."""

    differentiable = False
    thresholds: torch.Tensor

    def __init__(self, levels: int = 2, thresholds: torch.Tensor | None = None, dither: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__()
        if levels < 2:
            raise ConfigError(f"levels = {levels} must be >= 2")
        if not 0.0 <= dither < 1.0:
            raise ConfigError(f"dither = {dither} is out of range; allowed [0, 1)")
        if thresholds is None:
            thresholds = (torch.arange(1, levels, dtype=torch.float32) - 0.5) / (levels - 1)
        if thresholds.numel() != levels - 1:
            raise ConfigError(f"{levels} levels need {levels - 1} thresholds, got {thresholds.numel()}")
        self.levels, self.dither = levels, dither
        self.random = dither > 0
        self.register_buffer("thresholds", thresholds.detach().float().sort().values.clone())
        self._gen = torch.Generator().manual_seed(seed)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.dither > 0:
            x = x + self.dither * (torch.rand(x.shape, generator=self._gen).to(x.device) * 2 - 1)
        steps = (x.unsqueeze(-1) > self.thresholds).sum(-1).to(x.dtype)
        return steps / (self.levels - 1)


class MedianFilter(InputTransform):
    """``size`` x ``size`` median filter with reflect padding (not differentiable: BPDA for adaptive attacks)."""

    differentiable = False

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"median filter size = {size} must be an odd number >= 1")
        self.size = size

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        p = self.size // 2
        if p == 0:
            return x
        xp = F.pad(x, (p, p, p, p), mode="reflect")
        patches = xp.unfold(2, self.size, 1).unfold(3, self.size, 1)
        return patches.reshape(*x.shape, -1).median(dim=-1).values


class LowPassFilter(InputTransform):
    """Gaussian low-pass filter (``size`` x ``size``, ``sigma``): differentiable, attacked directly."""

    kernel: torch.Tensor

    def __init__(self, size: int = 3, sigma: float = 1.0) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ConfigError(f"low-pass filter size = {size} must be an odd number >= 1")
        if sigma <= 0:
            raise ConfigError(f"low-pass sigma = {sigma} must be > 0")
        r = torch.arange(size, dtype=torch.float32) - size // 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        k = torch.outer(g, g)
        self.register_buffer("kernel", (k / k.sum())[None, None])
        self.size = size

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        p = self.size // 2
        c = x.shape[1]
        xp = F.pad(x, (p, p, p, p), mode="reflect")
        return F.conv2d(xp, self.kernel.expand(c, 1, -1, -1), groups=c)


class Defended(nn.Module):
    """``model(transform(x))``: a classifier behind an input defence."""

    def __init__(self, transform: InputTransform, model: nn.Module) -> None:
        super().__init__()
        self.transform, self.model = transform, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))


@contextlib.contextmanager
def bpda(model: nn.Module) -> Iterator[nn.Module]:
    """Backward-pass differentiable approximation for every input transform in ``model`` while inside."""
    mods = [m for m in model.modules() if isinstance(m, InputTransform)]
    old = [m.bpda for m in mods]
    for m in mods:
        m.bpda = True
    try:
        yield model
    finally:
        for m, flag in zip(mods, old, strict=True):
            m.bpda = flag
