"""One verb for quantizing a model: build the per-layer specs, swap the layers, calibrate, and
optionally fine-tune (QAT, binary, ternary). The flow stage, the CLI, the bit-width sweep and the
benchmarks all go through :func:`quantize` with a :class:`QuantizeConfig`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError, StageError
from crosslayer.quant.calibrate import CalibrationConfig, calibrate
from crosslayer.quant.coverage import called_layers, float_layers
from crosslayer.quant.fixed_point import FixedPointSpec
from crosslayer.quant.layers import quantize_model
from crosslayer.quant.qat import QATConfig, quantization_aware_finetune, zero_masks
from crosslayer.train import TrainResult

__all__ = ["MODES", "QuantizeConfig", "QuantizeResult", "build_specs", "quantizable_layers", "quantize"]

log = logging.getLogger(__name__)

MODES = ("ptq", "qat", "binary", "ternary")


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(Config):
    """Quantization of weights and input activations of every Conv2d / Linear layer.

    ``mode``: ``ptq`` (calibrate only), ``qat`` (calibrate, then fine-tune with the STE), ``binary``
    (XNOR-Net weights) or ``ternary`` (TWN weights), the last two fine-tuned for ``qat_epochs``.
    ``weight_bits`` / ``act_bits`` apply to every layer (``act_bits = 0`` keeps activations in float);
    ``layer_weight_bits`` / ``layer_act_bits`` override them per layer name. ``weight_frac_bits`` /
    ``act_frac_bits`` fix the Qm.n format (scale ``2^-n``) instead of calibrating the scale.
    ``sweep`` runs the bit-width sweep (flow stage only) over ``sweep_bits`` with ``budget_pp``.
    """

    mode: Literal["ptq", "qat", "binary", "ternary"] = "ptq"
    weight_bits: int = 8
    act_bits: int = 8
    layer_weight_bits: dict[str, int] = field(default_factory=dict)
    layer_act_bits: dict[str, int] = field(default_factory=dict)
    per_channel: bool = True
    symmetric: bool = True
    weight_frac_bits: int | None = None
    act_frac_bits: int | None = None
    calibration: Literal["minmax", "percentile", "mse"] = "minmax"
    percentile: float = 99.99
    calib_batches: int = 8
    calib_batch_size: int = 128
    qat_epochs: int = 2
    qat_lr: float = 1e-3
    qat_batch_size: int = 64
    sweep: bool = False
    sweep_bits: tuple[int, ...] = (16, 12, 10, 8, 6, 5, 4, 3, 2)
    sweep_per_layer: bool = True
    sweep_qat: bool = False
    budget_pp: float = 0.1

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode = {self.mode!r} is not allowed; choose one of {', '.join(MODES)}")
        check_range("weight_bits", self.weight_bits, 1, 16)
        if self.act_bits != 0:
            check_range("act_bits", self.act_bits, 2, 16)
        for name, b in self.layer_weight_bits.items():
            check_range(f"layer_weight_bits.{name}", b, 1, 16)
        for name, b in self.layer_act_bits.items():
            if b != 0:
                check_range(f"layer_act_bits.{name}", b, 2, 16)
        if self.mode in ("ptq", "qat") and (self.weight_bits == 1 or 1 in self.layer_weight_bits.values()):
            raise ConfigError("weight_bits = 1 needs mode = 'binary'; uniform fixed point needs 2-16 bits")
        for key in ("weight_frac_bits", "act_frac_bits"):
            v = getattr(self, key)
            if v is not None:
                check_range(key, v, -32, 32)
        check_range("percentile", self.percentile, 50.0, 100.0, lo_open=True)
        check_range("calib_batches", self.calib_batches, 1)
        check_range("calib_batch_size", self.calib_batch_size, 1, MAX_BATCH)
        check_range("qat_epochs", self.qat_epochs, 0, MAX_EPOCHS)
        check_range("qat_lr", self.qat_lr, 0.0, lo_open=True)
        check_range("qat_batch_size", self.qat_batch_size, 1, MAX_BATCH)
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)
        if not self.sweep_bits:
            raise ConfigError("sweep_bits is empty; give bit widths in 2-16")
        for b in self.sweep_bits:
            check_range("sweep_bits[]", b, 2, 16)


    @property
    def calibration_config(self) -> CalibrationConfig:
        return CalibrationConfig(method=self.calibration, percentile=self.percentile, batches=self.calib_batches,
                                 batch_size=self.calib_batch_size)

    @property
    def qat_config(self) -> QATConfig:
        return QATConfig(epochs=self.qat_epochs, lr=self.qat_lr, batch_size=self.qat_batch_size)

    @property
    def trains(self) -> bool:
        return self.mode != "ptq" and self.qat_epochs > 0


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d / Linear layers, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _check_names(given: Iterable[str], names: list[str], what: str) -> None:
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise StageError(f"{what}: no quantizable layer named {', '.join(map(repr, unknown))}; "
                         f"layers are: {', '.join(names)}")


def build_specs(names: list[str], cfg: QuantizeConfig) -> tuple[dict[str, FixedPointSpec | None],
                                                                  dict[str, FixedPointSpec | None]]:
    """Per-layer weight and activation specs for the layers ``names``."""
    _check_names(cfg.layer_weight_bits, names, "layer_weight_bits")
    _check_names(cfg.layer_act_bits, names, "layer_act_bits")
    wspecs: dict[str, FixedPointSpec | None] = {}
    aspecs: dict[str, FixedPointSpec | None] = {}
    for n in names:
        wb = cfg.layer_weight_bits.get(n, cfg.weight_bits)
        ab = cfg.layer_act_bits.get(n, cfg.act_bits)
        if cfg.mode == "binary" and n not in cfg.layer_weight_bits:
            wspecs[n] = FixedPointSpec(bits=1, scheme="binary", per_channel=True)
        elif cfg.mode == "ternary" and n not in cfg.layer_weight_bits:
            wspecs[n] = FixedPointSpec(bits=2, scheme="ternary", per_channel=cfg.per_channel)
        elif wb == 1:
            wspecs[n] = FixedPointSpec(bits=1, scheme="binary", per_channel=True)
        else:
            frac = cfg.weight_frac_bits
            wspecs[n] = FixedPointSpec(bits=wb, signed=True, symmetric=cfg.symmetric or frac is not None,
                                       per_channel=cfg.per_channel and frac is None, frac_bits=frac)
        if ab == 0:
            aspecs[n] = None
        else:
            frac = cfg.act_frac_bits
            sym = cfg.symmetric or frac is not None
            aspecs[n] = FixedPointSpec(bits=ab, signed=sym, symmetric=sym, per_channel=False, frac_bits=frac)
    return wspecs, aspecs


@dataclass
class QuantizeResult:
    """The quantized model and what was done to it."""

    model: nn.Module
    act_ranges: dict[str, tuple[float, float]]
    training: TrainResult | None
    masked_layers: list[str]
    float_layers: dict[str, str] = field(default_factory=dict)
    """Modules with parameters left float, each with the reason (see :mod:`crosslayer.quant.coverage`)."""


def quantize(model: nn.Module, cfg: QuantizeConfig, data: DataSplits, *, seed: int = 0,
             masks: Mapping[str, torch.Tensor] | None = None, copy_model: bool = True,
             layers: Iterable[str] | None = None) -> QuantizeResult:
    """Quantize ``model`` (a copy unless ``copy_model`` is false) following ``cfg``.

    Only ``layers`` are quantized when given (the rest stay float). Conv2d / Linear layers that ``forward``
    does not call as modules (e.g. the output projection inside ``nn.MultiheadAttention``) stay float; they and
    every other float module are listed in the result's ``float_layers`` with the reason. ``masks``
    (``{param: bool}``, True = kept) are kept exactly zero through fine-tuning; by default the model's own
    exact zeros.
    """
    q = copy.deepcopy(model) if copy_model else model
    names = quantizable_layers(q)
    if not names:
        raise StageError("the model has no Conv2d or Linear layer to quantize")
    _check_names(layers or [], names, "layers")
    called = called_layers(q, data.train.images[:2])
    chosen = [n for n in (list(layers) if layers is not None else names) if n in called]
    if not chosen:
        raise StageError("forward() calls none of the model's Conv2d / Linear layers as a module, so none can be "
                         "quantized")
    keep = dict(zero_masks(q) if masks is None else masks)
    wspecs, aspecs = build_specs(chosen, cfg)
    quantize_model(q, wspecs, aspecs, layers=chosen)
    calib = cfg.calibration_config
    ranges = calibrate(q, data.train.images, calib, seed=seed)
    result = None
    if cfg.trains:
        result = quantization_aware_finetune(q, data.train, data.val, cfg.qat_config, seed=seed, masks=keep,
                                             desc=f"{cfg.mode} fine-tune")
        ranges = calibrate(q, data.train.images, calib, seed=seed)
    q.eval()
    return QuantizeResult(model=q, act_ranges=ranges, training=result, masked_layers=sorted(keep),
                          float_layers=float_layers(q, set(chosen), called))
