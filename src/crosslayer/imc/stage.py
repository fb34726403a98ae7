"""Flow stage ``imc``: the model on simulated ReRAM crossbars, with and without variation-aware
training (Long et al., DATE 2019), accuracy versus variation strength and ADC bits, and the
crossbar's energy / area next to the digital accelerator's (ISAAC / PRIME unit figures)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.imc.cost import CostParams, layer_shapes, network_cost
from crosslayer.imc.evaluation import SweepPoint, crossbar_accuracy, sweep
from crosslayer.imc.spec import CrossbarSpec
from crosslayer.imc.training import AwareTrainConfig, train_variation_aware
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import evaluate

__all__ = ["ImcConfig"]

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
    ``calibration_images``."""

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
        check_range("[imc] seeds", self.seeds, 1)
        check_range("[imc] eval_limit", self.eval_limit, 0)
        check_range("[imc] calibration_images", self.calibration_images, 0)

    def aware_config(self) -> AwareTrainConfig:
        return AwareTrainConfig(epochs=self.aware_epochs, lr=self.aware_lr, optimizer=self.aware_optimizer,
                                augment_shift=self.aware_augment_shift, augment_rotate=self.aware_augment_rotate,
                                augment_scale=self.aware_augment_scale)


def _sweep_plot(std: list[SweepPoint], aware: list[SweepPoint], *, title: str, xlabel: str, caption: str) -> Any:
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    for name, pts in (("conventional training", std), ("variation-aware training", aware)):
        ax.errorbar([p.value for p in pts], [p.mean for p in pts], yerr=[p.std for p in pts], marker="o",
                    capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return to_figure(fig, title, caption)


def _energy_plot(names: list[str], parts: dict[str, list[float]]) -> Any:
    from crosslayer.viz import new_figure, to_figure

    fig, ax = new_figure()
    bottom = [0.0] * len(names)
    for label, vals in parts.items():
        ax.bar(names, [v / 1e3 for v in vals], bottom=[b / 1e3 for b in bottom], label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title("Crossbar energy per layer")
    ax.legend()
    return to_figure(fig, "Crossbar energy per layer", "array reads, DAC and ADC conversions (ISAAC unit figures)")


@register_stage("imc", ImcConfig, "ReRAM crossbar inference, variation-aware training, energy and area")
def imc_stage(ctx: StageContext, cfg: ImcConfig) -> StageResult:
    rep = Report("imc")
    model: nn.Module = ctx.model
    if cfg.source == "baseline":
        if "baseline" in ctx.models:
            model = ctx.models["baseline"]
        else:
            rep.notes.append("no published 'baseline' model; used the current model")
    if any(hasattr(m, "weight_spec") for m in model.modules()):
        rep.notes.append("quantized model: crossbar weights are its fixed-point weights; its activation "
                         "quantization is replaced by the crossbar DAC")
    spec = cfg.crossbar
    test = ctx.data.test.subset(cfg.eval_limit) if cfg.eval_limit else ctx.data.test
    cal = ctx.data.train.images[:cfg.calibration_images] if cfg.calibration_images else None
    seeds = [ctx.seed * 1000 + i for i in range(cfg.seeds)]

    aware, tres = train_variation_aware(model, ctx.data.train, ctx.data.val, spec, cfg.aware_config(), seed=ctx.seed)
    ideal = spec.replace(d2d_sigma=0.0, c2c_sigma=0.0, stuck_on_rate=0.0, stuck_off_rate=0.0)
    digital = {"conventional": evaluate(model, test).accuracy, "aware": evaluate(aware, test).accuracy}
    op: dict[str, tuple[float, ...]] = {}
    for name, net in (("conventional", model), ("aware", aware)):
        op[name] = crossbar_accuracy(net, spec, test, seeds=seeds, calibration=cal)
    no_var = crossbar_accuracy(model, ideal, test, seeds=seeds[:1], calibration=cal)[0]
    sig = {name: sweep(net, spec, "d2d_sigma", cfg.sigmas, test, seeds=seeds, calibration=cal)
           for name, net in (("conventional", model), ("aware", aware))}
    adc = {name: sweep(net, spec, "adc_bits", cfg.adc_bits_sweep, test, seeds=seeds, calibration=cal)
           for name, net in (("conventional", model), ("aware", aware))}

    std_pt, aw_pt = SweepPoint(spec.d2d_sigma, op["conventional"]), SweepPoint(spec.d2d_sigma, op["aware"])
    rep.metrics.update({
        "test_accuracy": aw_pt.mean, "test_accuracy_std": aw_pt.std,
        "clean_accuracy": digital["conventional"], "aware_clean_accuracy": digital["aware"],
        "crossbar_no_variation_accuracy": no_var,
        "noisy_accuracy_standard": std_pt.mean, "noisy_accuracy_standard_std": std_pt.std,
        "noisy_accuracy_aware": aw_pt.mean, "noisy_accuracy_aware_std": aw_pt.std,
        "recovered_pp": 100 * (aw_pt.mean - std_pt.mean), "sigma": spec.sigma, "variation": spec.variation,
        "aware_train_seconds": tres.train_seconds, "eval_images": len(test), "chips": len(seeds),
    })
    rep.figures.append(_sweep_plot(
        sig["conventional"], sig["aware"], title="Accuracy vs device variation",
        xlabel=f"device-to-device sigma ({spec.variation}; c2c sigma {spec.c2c_sigma:g})",
        caption=f"mean and std over {len(seeds)} chips, {len(test)} test images; variation-aware model "
                f"fine-tuned {cfg.aware_epochs} epoch(s) at d2d sigma {spec.d2d_sigma:g}"))
    rep.figures.append(_sweep_plot(
        adc["conventional"], adc["aware"], title="Accuracy vs ADC resolution", xlabel="ADC bits (0 = ideal)",
        caption=f"per-tile partial sums digitised; variation as at the operating point (sigma {spec.sigma:.2f})"))
    rep.add_table("Accuracy vs variation", ["d2d sigma", "conventional mean", "conventional std", "aware mean",
                                            "aware std"],
                  [[a.value, a.mean, a.std, b.mean, b.std] for a, b in zip(sig["conventional"], sig["aware"],
                                                                           strict=True)])
    rep.add_table("Accuracy vs ADC bits", ["ADC bits", "conventional mean", "aware mean"],
                  [[a.value, a.mean, b.mean] for a, b in zip(adc["conventional"], adc["aware"], strict=True)])

    params = CostParams()
    costs, totals = network_cost(layer_shapes(model, ctx.data.input_shape), spec, params)
    rep.add_table("Crossbar cost per layer (per inference)",
                  ["layer", "tiles", "input vectors", "array pJ", "DAC pJ", "ADC pJ", "ADC conversions",
                   "area mm2", "latency us"],
                  [[c.name, c.tiles, c.mvms, c.array_pj, c.dac_pj, c.adc_pj, c.adc_conversions, c.area_mm2,
                    c.latency_s * 1e6] for c in costs])
    rep.figures.append(_energy_plot([c.name for c in costs], {"array": [c.array_pj for c in costs],
                                                              "DAC": [c.dac_pj for c in costs],
                                                              "ADC": [c.adc_pj for c in costs]}))
    rep.metrics.update({"imc_energy_pj": totals["energy_pj"], "imc_energy_mac_units": totals["energy_mac_units"],
                        "imc_area_mm2": totals["area_mm2"], "imc_latency_us": totals["latency_s"] * 1e6,
                        "imc_tiles": int(totals["tiles"]), "imc_adc_energy_share": totals["adc_share"]})
    hw = ctx.artifacts.get("hw_energy_per_inference")
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
    return StageResult(report=rep, publish={"imc_aware": aware},
                       artifacts={"imc_energy_per_inference_pj": totals["energy_pj"]})
