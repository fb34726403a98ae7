"""Flow stages ``imc`` (the model on simulated ReRAM crossbars, with and without variation-aware training
(Long et al., DATE 2019), accuracy versus variation strength and ADC bits, and the crossbar's energy / area
next to the digital accelerator's, ISAAC / PRIME unit figures) and ``imc_train`` (the variation-aware
fine-tuning alone, leaving the fine-tuned model as the current one); thin callers of
:func:`~crosslayer.imc.api.imc_simulate` and :func:`~crosslayer.imc.api.imc_train`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.imc.api import ImcTrainConfig, SimulateConfig, SimulateResult, imc_simulate, imc_train
from crosslayer.imc.cost import CostParams, layer_shapes, network_cost
from crosslayer.imc.plots import energy_figure, sweep_figure
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.training import AwareTrainConfig
from crosslayer.report import Report
from crosslayer.stage import (
    HW_ENERGY_PER_INFERENCE,
    IMC_ENERGY_PER_INFERENCE_PJ,
    StageContext,
    StageResult,
    register_stage,
)
from crosslayer.train import evaluate

__all__ = ["ImcConfig", "ImcTrainConfig"]

log = logging.getLogger(__name__)


def _default_spec() -> CrossbarSpec:
    return CrossbarSpec(d2d_sigma=0.5, c2c_sigma=0.2)


@dataclass(frozen=True, kw_only=True)
class ImcConfig(Config):
    """``source``: the current model or the published baseline. ``crossbar``: the operating point
    (its ``d2d_sigma`` is swept over ``sigmas``, its ``adc_bits`` over ``adc_bits_sweep``).
    Variation-aware fine-tuning of the trained model: ``aware_epochs`` at ``aware_lr`` with ``aware_optimizer``
    (a small rate: 1e-3 for one epoch cost the demo's pruned LeNet-5 2.6 pp of clean accuracy and left it
    below the conventional model on the noisy crossbar; 2 epochs at 2e-4 recover 0.85 pp), with the data
    augmentation ``aware_augment_shift`` / ``aware_augment_rotate`` / ``aware_augment_scale`` (give the
    baseline's values for longer fine-tuning, as benchmarks/imc.py does). Evaluation:
    ``seeds`` chips on the first ``eval_limit`` test images (0 = all); ADC ranges calibrated on
    ``calibration_images``. ``aware_limit``: fine-tune on the first N training images (0: all)."""

    source: Literal["current", "baseline"] = "current"
    crossbar: CrossbarSpec = field(default_factory=_default_spec)
    sigmas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    adc_bits_sweep: tuple[int, ...] = (3, 4, 5, 6, 8)
    aware_epochs: int = 2
    aware_lr: float = 0.0002
    aware_optimizer: Literal["sgd", "adam"] = "adam"
    aware_augment_shift: int = 0
    aware_augment_rotate: float = 0.0
    aware_augment_scale: float = 0.0
    aware_limit: int = 0
    seeds: int = 2
    eval_limit: int = 1000
    calibration_images: int = 256

    def validate(self) -> None:
        if not self.sigmas:
            raise ConfigError("[imc] sigmas is empty; give at least one variation strength, e.g. [0.0, 0.5]")
        for s in self.sigmas:
            check_range("[imc] sigmas[]", s, 0.0)
        for b in self.adc_bits_sweep:
            check_range("[imc] adc_bits_sweep[]", b, 0, 24)
            if b == 1:
                raise ConfigError("[imc] adc_bits_sweep[] = 1 is not allowed; use 0 (ideal) or 2-24")
        check_range("[imc] aware_epochs", self.aware_epochs, 1)
        check_range("[imc] aware_lr", self.aware_lr, 0.0, lo_open=True)
        self.aware_config()  # the augmentation is checked where it is used
        check_range("[imc] aware_limit", self.aware_limit, 0)
        check_range("[imc] seeds", self.seeds, 1)
        check_range("[imc] eval_limit", self.eval_limit, 0)
        check_range("[imc] calibration_images", self.calibration_images, 0)

    def aware_config(self) -> AwareTrainConfig:
        return AwareTrainConfig(epochs=self.aware_epochs, lr=self.aware_lr, optimizer=self.aware_optimizer,
                                augment_shift=self.aware_augment_shift, augment_rotate=self.aware_augment_rotate,
                                augment_scale=self.aware_augment_scale)


def _source_model(ctx: StageContext, cfg: ImcConfig, rep: Report) -> nn.Module:
    model: nn.Module = ctx.model
    if cfg.source == "baseline":
        if "baseline" in ctx.models:
            model = ctx.models["baseline"]
        else:
            rep.notes.append("no published 'baseline' model; used the current model")
    if any(hasattr(m, "weight_spec") for m in model.modules()):
        rep.notes.append("quantized model: crossbar weights are its fixed-point weights; its activation "
                         "quantization is replaced by the crossbar DAC")
    return model


def _accuracy_report(rep: Report, cfg: ImcConfig, std: SimulateResult, aw: SimulateResult, no_var: float,
                     train_seconds: float, chips: int) -> None:
    spec = cfg.crossbar
    rep.metrics.update({
        "test_accuracy": aw.accuracy, "test_accuracy_std": aw.accuracy_std,
        "clean_accuracy": std.digital_accuracy, "aware_clean_accuracy": aw.digital_accuracy,
        "crossbar_no_variation_accuracy": no_var,
        "noisy_accuracy_standard": std.accuracy, "noisy_accuracy_standard_std": std.accuracy_std,
        "noisy_accuracy_aware": aw.accuracy, "noisy_accuracy_aware_std": aw.accuracy_std,
        "recovered_pp": 100 * (aw.accuracy - std.accuracy), "sigma": spec.sigma, "variation": spec.variation,
        "aware_train_seconds": train_seconds, "eval_images": std.images, "chips": chips,
    })
    sig, adc = (std.sweeps["d2d_sigma"], aw.sweeps["d2d_sigma"]), (std.sweeps["adc_bits"], aw.sweeps["adc_bits"])
    rep.figures.append(sweep_figure(
        *sig, title="Accuracy vs device variation",
        xlabel=f"device-to-device sigma ({spec.variation}; c2c sigma {spec.c2c_sigma:g})",
        caption=f"mean and std over {chips} chips, {std.images} test images; variation-aware model "
                f"fine-tuned {cfg.aware_epochs} epoch(s) at d2d sigma {spec.d2d_sigma:g}"))
    rep.figures.append(sweep_figure(
        *adc, title="Accuracy vs ADC resolution", xlabel="ADC bits (0 = ideal)",
        caption=f"per-tile partial sums digitised; variation as at the operating point (sigma {spec.sigma:.2f})"))
    rep.add_table("Accuracy vs variation", ["d2d sigma", "conventional mean", "conventional std", "aware mean",
                                            "aware std"],
                  [[a.value, a.mean, a.std, b.mean, b.std] for a, b in zip(*sig, strict=True)])
    rep.add_table("Accuracy vs ADC bits", ["ADC bits", "conventional mean", "aware mean"],
                  [[a.value, a.mean, b.mean] for a, b in zip(*adc, strict=True)])


def _cost_report(ctx: StageContext, rep: Report, model: nn.Module, spec: CrossbarSpec) -> float:
    params = CostParams()
    costs, totals = network_cost(layer_shapes(model, ctx.data.input_shape), spec, params)
    rep.add_table("Crossbar cost per layer (per inference)",
                  ["layer", "tiles", "input vectors", "array pJ", "DAC pJ", "ADC pJ", "ADC conversions",
                   "area mm2", "latency us"],
                  [[c.name, c.tiles, c.mvms, c.array_pj, c.dac_pj, c.adc_pj, c.adc_conversions, c.area_mm2,
                    c.latency_s * 1e6] for c in costs])
    rep.figures.append(energy_figure([c.name for c in costs], {"array": [c.array_pj for c in costs],
                                                               "DAC": [c.dac_pj for c in costs],
                                                               "ADC": [c.adc_pj for c in costs]}))
    rep.metrics.update({"imc_energy_pj": totals["energy_pj"], "imc_energy_mac_units": totals["energy_mac_units"],
                        "imc_area_mm2": totals["area_mm2"], "imc_latency_us": totals["latency_s"] * 1e6,
                        "imc_tiles": int(totals["tiles"]), "imc_adc_energy_share": totals["adc_share"]})
    hw = ctx.get(HW_ENERGY_PER_INFERENCE)
    rows: list[list[Any]] = [["crossbar (this stage)", totals["energy_mac_units"], totals["energy_pj"]]]
    if isinstance(hw, (int, float)) and hw > 0:
        rows.append(["digital accelerator (hardware stage)", float(hw), float(hw) * params.digital_mac_pj])
        rep.metrics["digital_energy_mac_units"] = float(hw)
        rep.metrics["imc_vs_digital_energy"] = totals["energy_mac_units"] / float(hw)
    else:
        rep.notes.append("no 'hw_energy_per_inference' artifact (hardware stage not run): "
                         "digital comparison left out")
    rep.add_table("Energy per inference: crossbar vs digital",
                  ["design", "MAC-normalised units", f"pJ (MAC = {params.digital_mac_pj} pJ)"], rows)
    rep.notes.append(f"ADC energy is {100 * totals['adc_share']:.0f} % of the crossbar energy "
                     "(ISAAC reports the ADCs as the dominant cost too)")
    return float(totals["energy_pj"])


@register_stage("imc", ImcConfig, "ReRAM crossbar inference, variation-aware training, energy and area")
def imc_stage(ctx: StageContext, cfg: ImcConfig) -> StageResult:
    rep = Report("imc")
    model = _source_model(ctx, cfg, rep)
    spec = cfg.crossbar
    seeds = [ctx.seed * 1000 + i for i in range(cfg.seeds)]
    data = replace(ctx.data, train=ctx.data.train.subset(cfg.aware_limit)) if cfg.aware_limit else ctx.data
    trained = imc_train(model, ImcTrainConfig(crossbar=spec, training=cfg.aware_config()), data, seed=ctx.seed)
    sim = SimulateConfig(crossbar=spec, sigmas=cfg.sigmas, adc_bits_sweep=cfg.adc_bits_sweep,
                         eval_limit=cfg.eval_limit, calibration_images=cfg.calibration_images)
    std = imc_simulate(model, sim, ctx.data, seeds=seeds)
    aw = imc_simulate(trained.model, sim, ctx.data, seeds=seeds)
    ideal = spec.replace(d2d_sigma=0.0, c2c_sigma=0.0, stuck_on_rate=0.0, stuck_off_rate=0.0)
    no_var = imc_simulate(model, SimulateConfig(crossbar=ideal, eval_limit=cfg.eval_limit,
                                                calibration_images=cfg.calibration_images),
                          ctx.data, seeds=seeds[:1]).point.accuracies[0]
    _accuracy_report(rep, cfg, std, aw, no_var, trained.training.train_seconds, len(seeds))
    rep.metrics["aware_train_images"] = len(data.train)
    energy = _cost_report(ctx, rep, model, spec)
    return StageResult(report=rep, publish={"imc_aware": trained.model},
                       artifacts={IMC_ENERGY_PER_INFERENCE_PJ.name: energy})


@register_stage("imc_train", ImcTrainConfig, "variation-aware fine-tuning for a ReRAM crossbar (Long et al., 2019)")
def imc_train_stage(ctx: StageContext, cfg: ImcTrainConfig) -> StageResult:
    rep = Report("imc_train")
    before = evaluate(ctx.model, ctx.data.test).accuracy
    out = imc_train(ctx.model, cfg, ctx.data, seed=ctx.seed)
    after = evaluate(out.model, ctx.data.test).accuracy
    spec = cfg.crossbar
    history = out.training.history
    rep.metrics.update({"test_accuracy": after, "input_test_accuracy": before,
                        "clean_accuracy_change_pp": 100 * (after - before),
                        "val_accuracy": history[-1]["val_accuracy"] if history else None,
                        "train_seconds": out.training.train_seconds, "epochs": cfg.training.epochs,
                        "sigma": spec.sigma, "d2d_sigma": spec.d2d_sigma, "c2c_sigma": spec.c2c_sigma,
                        "variation": spec.variation})
    if history:
        rep.add_table("Variation-aware fine-tuning", ["epoch", "train loss", "val accuracy (clean)"],
                      [[h["epoch"], h["train_loss"], h["val_accuracy"]] for h in history])
    rep.notes.append("the model is fine-tuned under one random programming of the crossbar per step; its accuracy "
                     "on simulated chips is measured by the imc stage or `crosslayer imc simulate`")
    return StageResult(report=rep, model=out.model, publish={"imc_aware": out.model})
