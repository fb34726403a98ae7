"""Post-training calibration of activation ranges over calibration batches.

The quantized layers record their input range under :class:`~crosslayer.quant.layers.calibrating`
(min / max); for the ``percentile`` and ``mse`` methods an :class:`ActivationSampler` also keeps a
seeded random sample of each layer's inputs, from which :mod:`crosslayer.quant.clipping` picks the
clipping range. A symmetric signed activation spec whose calibrated range is non-negative (images,
ReLU outputs) becomes unsigned, so no code is wasted on a sign that never occurs (as in the uint8
activations of Jacob et al., CVPR 2018).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from crosslayer.config import MAX_BATCH, Config, check_range
from crosslayer.errors import StageError
from crosslayer.quant.clipping import mse_range, percentile_range
from crosslayer.quant.layers import QuantLayer, calibrating, iter_quant_layers

__all__ = ["ActivationSampler", "CalibrationConfig", "calibrate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig(Config):
    """How activation ranges are calibrated.

    ``method``: ``minmax`` | ``percentile`` | ``mse``; ``batches`` x ``batch_size`` images are used
    (a seeded random subset); ``max_samples`` values per layer are kept for percentile / MSE.
    """

    method: Literal["minmax", "percentile", "mse"] = "minmax"
    percentile: float = 99.99
    batches: int = 8
    batch_size: int = 128
    max_samples: int = 100_000
    unsigned_when_nonnegative: bool = True

    def validate(self) -> None:
        if self.method not in ("minmax", "percentile", "mse"):
            raise StageError(f"calibration method = {self.method!r} is not allowed; "
                             "choose one of 'minmax', 'percentile', 'mse'")
        check_range("percentile", self.percentile, 50.0, 100.0, lo_open=True)
        check_range("calibration batches", self.batches, 1)
        check_range("calibration batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("max_samples", self.max_samples, 16)



class ActivationSampler:
    """Context manager: forward pre-hooks keeping a seeded random sample of each quantized layer's input."""

    def __init__(self, layers: dict[str, QuantLayer], per_batch: int, seed: int = 0) -> None:
        self.layers = layers
        self.per_batch = per_batch
        self.samples: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        self._gen = torch.Generator().manual_seed(seed)
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().flatten().float().cpu()
            if x.numel() > self.per_batch:
                x = x[torch.randint(x.numel(), (self.per_batch,), generator=self._gen)]
            self.samples[name].append(x)
        return hook

    def values(self, name: str) -> torch.Tensor:
        return torch.cat(self.samples[name]) if self.samples[name] else torch.empty(0)

    def __enter__(self) -> ActivationSampler:
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _calibration_batches(images: torch.Tensor, cfg: CalibrationConfig, seed: int) -> list[torch.Tensor]:
    n = min(len(images), cfg.batches * cfg.batch_size)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return [images[order[i:i + cfg.batch_size]] for i in range(0, n, cfg.batch_size)]


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, cfg: CalibrationConfig | None = None, *,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """Set the input range of every quantized layer that has an ``act_spec``; returns ``{layer: (lo, hi)}``.

    Raises ``StageError`` with no calibration images or when a quantized layer sees no input.
    """
    cfg = cfg or CalibrationConfig()
    if images is None or images.dim() == 0 or len(images) == 0:
        raise StageError("calibration needs data: got 0 calibration images; give at least one batch "
                         "(calibration batches >= 1 and a non-empty training set)")
    layers = {n: m for n, m in iter_quant_layers(model) if m.act_spec is not None}
    if not layers:
        return {}
    for m in layers.values():
        m.act_lo.fill_(float("inf"))
        m.act_hi.fill_(float("-inf"))
    batches = _calibration_batches(images, cfg, seed)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_batch = max(1, cfg.max_samples // len(batches))
    sampler = ActivationSampler(layers if cfg.method != "minmax" else {}, per_batch, seed)
    try:
        with calibrating(model), sampler:
            for x in batches:
                model(x.to(dev))
    finally:
        model.train(was_training)
    ranges: dict[str, tuple[float, float]] = {}
    for name, m in layers.items():
        if not m.act_calibrated:
            raise StageError(f"quantized layer {name!r} saw no input during calibration; "
                             "is it used in the model's forward()?")
        spec = m.act_spec
        assert spec is not None
        lo, hi = float(m.act_lo), float(m.act_hi)
        if cfg.unsigned_when_nonnegative and lo >= 0 and spec.signed and spec.symmetric and spec.frac_bits is None:
            spec = dataclasses.replace(spec, signed=False)
            m.act_spec = spec
        if cfg.method != "minmax":
            # the sample plus the exact extremes, so that MSE clipping pays for the outliers it cuts
            values = torch.cat([sampler.values(name), torch.tensor([lo, hi])])
            lo, hi = percentile_range(values, cfg.percentile) if cfg.method == "percentile" else mse_range(values, spec)
        m.act_lo.fill_(lo)
        m.act_hi.fill_(hi)
        ranges[name] = (lo, hi)
        log.debug("calibrated %s: [%g, %g] %s", name, lo, hi, cfg.method)
    return ranges
