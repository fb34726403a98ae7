"""The verbs of the in-memory computing step: :func:`imc_simulate` (a model's accuracy on simulated ReRAM
crossbar chips, at an operating point and over sweeps of its variation and ADC resolution) and
:func:`imc_train` (variation-aware fine-tuning, Long et al., DATE 2019).

The crossbar is a :class:`~crosslayer.imc.spec.CrossbarSpec` nested in each config; chips are seeds, one
programming of every device per seed (device-to-device variation and stuck-at faults fixed for a chip). The
model passed in is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.imc.evaluation import SweepPoint, crossbar_accuracy, sweep
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.training import AwareTrainConfig, train_variation_aware
from crosslayer.train import TrainResult, evaluate

__all__ = ["ImcTrainConfig", "ImcTrainResult", "SimulateConfig", "SimulateResult", "imc_simulate", "imc_train"]


@dataclass(frozen=True, kw_only=True)
class SimulateConfig(Config):
    """The crossbar operating point (``crossbar``), optional sweeps of its device-to-device sigma (``sigmas``)
    and ADC bits (``adc_bits_sweep``, 0 = ideal), the test images evaluated (the first ``eval_limit``, 0 = all)
    and the training images the ADC ranges are calibrated on (the first ``calibration_images``; 0: no
    calibration, the spec's ``adc_full_scale`` is used)."""

    crossbar: CrossbarSpec = field(default_factory=CrossbarSpec)
    sigmas: tuple[float, ...] = ()
    adc_bits_sweep: tuple[int, ...] = ()
    eval_limit: int = 0
    calibration_images: int = 256

    def validate(self) -> None:
        for s in self.sigmas:
            check_range("sigmas[]", s, 0.0)
        for b in self.adc_bits_sweep:
            check_range("adc_bits_sweep[]", b, 0, 24)
            if b == 1:
                raise ConfigError("adc_bits_sweep[] = 1 is not allowed; use 0 (ideal) or 2-24")
        check_range("eval_limit", self.eval_limit, 0)
        check_range("calibration_images", self.calibration_images, 0)


@dataclass(frozen=True)
class SimulateResult:
    """Test accuracy (fractions) of the digital model and of the crossbar chips: ``point`` at the operating
    point (one accuracy per chip; ``mean`` / ``std`` over chips), ``sweeps`` ``{"d2d_sigma" | "adc_bits":
    [SweepPoint, ...]}`` for the sweeps configured, on ``images`` test images."""

    spec: CrossbarSpec
    digital_accuracy: float
    point: SweepPoint
    sweeps: dict[str, list[SweepPoint]]
    images: int

    @property
    def accuracy(self) -> float:
        return self.point.mean

    @property
    def accuracy_std(self) -> float:
        return self.point.std


def imc_simulate(model: nn.Module, config: SimulateConfig, data: DataSplits, *,
                 seeds: Sequence[int]) -> SimulateResult:
    """Program ``model`` onto one simulated crossbar chip per seed and measure its test accuracy there."""
    if not seeds:
        raise ConfigError("imc_simulate needs at least one chip seed")
    spec = config.crossbar
    test = data.test.subset(config.eval_limit) if config.eval_limit else data.test
    cal = data.train.images[:config.calibration_images] if config.calibration_images else None
    chips = list(seeds)
    point = SweepPoint(spec.d2d_sigma, crossbar_accuracy(model, spec, test, seeds=chips, calibration=cal))
    sweeps: dict[str, list[SweepPoint]] = {}
    for name, values in (("d2d_sigma", config.sigmas), ("adc_bits", config.adc_bits_sweep)):
        if values:
            sweeps[name] = sweep(model, spec, name, values, test, seeds=chips, calibration=cal)
    return SimulateResult(spec, evaluate(model, test).accuracy, point, sweeps, len(test))


def _default_crossbar() -> CrossbarSpec:
    return CrossbarSpec(d2d_sigma=0.5, c2c_sigma=0.2)


@dataclass(frozen=True, kw_only=True)
class ImcTrainConfig(Config):
    """Variation-aware fine-tuning: the crossbar whose programming noise the training sees (``crossbar``, by
    default d2d sigma 0.5 and c2c sigma 0.2; a ``[crossbar]`` table given replaces it, its missing keys taking
    :class:`CrossbarSpec`'s own defaults) and the fine-tuning schedule (``training``)."""

    crossbar: CrossbarSpec = field(default_factory=_default_crossbar)
    training: AwareTrainConfig = field(default_factory=AwareTrainConfig)


@dataclass
class ImcTrainResult:
    """The fine-tuned copy of the model and its training record."""

    model: nn.Module
    training: TrainResult


def imc_train(model: nn.Module, config: ImcTrainConfig, data: DataSplits, *, seed: int = 0) -> ImcTrainResult:
    """Fine-tune a copy of ``model`` under the crossbar's programming noise (Long et al., DATE 2019) on the
    training split (the clean validation split picks nothing: the last epoch is kept)."""
    aware, res = train_variation_aware(model, data.train, data.val, config.crossbar, config.training, seed=seed)
    return ImcTrainResult(aware, res)
