"""Flow stage ``resilience``: fault and noise injection on the current model (step 3 of the survey's
cross-layer flow). Publishes the layer ranking that the approximate-multiplier stage spends.

Three campaigns on a fixed subset of the test set:
1. single-bit-flip sensitivity per (layer, bit), Leveugle-sized samples (table + heat map);
2. weight-memory bit errors at given BERs per layer and for all layers (MATIC);
3. Gaussian noise on each layer's output (Hanif et al., DATE 2018).
The ranking (artifact ``resilience_ranking``, most resilient first) and ``resilience_drop_pp``
come from the campaign named by ``rank_by``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.quant import QuantLayer
from crosslayer.report import Report
from crosslayer.resilience.api import FaultConfig, inject_faults
from crosslayer.resilience.campaign import rank_layers
from crosslayer.resilience.faults import check_ber
from crosslayer.resilience.multi import TrialStats
from crosslayer.resilience.plots import ber_figure, heatmap_figure
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import evaluate

__all__ = ["FLOAT_BITS", "ResilienceConfig"]

FLOAT_BITS = (31, 30, 29, 28, 27, 26, 25, 24, 23, 22)
"""Default bits of a float32 weight: sign, the 8 exponent bits and the top mantissa bit (the lower
mantissa bits change a weight by less than 2^-2 of itself and are benign)."""


@dataclass(frozen=True, kw_only=True)
class ResilienceConfig(Config):
    """Options of the ``resilience`` stage (defaults are the light demo settings)."""

    test_subset: int = 500
    layers: tuple[str, ...] = ()
    representation: Literal["auto", "codes", "float32"] = "auto"
    code_bits: int = 8
    bits: tuple[int, ...] = ()
    injections: int = 0
    margin: float = 0.15
    confidence: float = 0.95
    critical_pp: float = 1.0
    bers: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    ber_mode: Literal["flip", "stuck"] = "flip"
    ber_trials: int = 2
    noise_sigma: float = 0.5
    noise_trials: int = 2
    rank_by: Literal["noise", "bitflip", "ber"] = "noise"

    def validate(self) -> None:
        check_range("resilience.test_subset", self.test_subset, 1)
        check_range("resilience.code_bits", self.code_bits, 2, 16)
        check_range("resilience.injections", self.injections, 0)
        check_range("resilience.margin", self.margin, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("resilience.confidence", self.confidence, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("resilience.critical_pp", self.critical_pp, 0.0, 100.0)
        check_range("resilience.ber_trials", self.ber_trials, 1)
        check_range("resilience.noise_sigma", self.noise_sigma, 0.0)
        check_range("resilience.noise_trials", self.noise_trials, 1)
        for b in self.bers:
            check_ber(b, "resilience.bers")
        for b in self.bits:
            check_range("resilience.bits", b, 0, 31)
        if self.rank_by == "ber" and not self.bers:
            raise ConfigError("resilience.rank_by = 'ber' needs at least one value in resilience.bers")


@register_stage("resilience", ResilienceConfig, "fault / noise injection campaigns and a layer resilience ranking")
def resilience_stage(ctx: StageContext, cfg: ResilienceConfig) -> StageResult:
    rep = Report("resilience")
    n = min(cfg.test_subset, len(ctx.data.test))
    quantized = any(isinstance(m, QuantLayer) and m.weight_spec is not None for m in ctx.model.modules())
    bits = cfg.bits or (FLOAT_BITS if cfg.representation == "float32" or
                        (cfg.representation == "auto" and not quantized) else ())
    if not quantized:
        rep.notes.append("the current model is not quantized: "
                         + ("its weights were quantized to "
                            f"{cfg.code_bits}-bit codes for the campaign" if cfg.representation == "codes" else
                            "bits of the float32 weights were flipped"))
    common = FaultConfig(layers=cfg.layers, representation=cfg.representation, code_bits=cfg.code_bits,
                         confidence=cfg.confidence, eval_limit=n)
    seed = ctx.seed
    sens_res = inject_faults(ctx.model, replace(common, campaign="sensitivity", bits=bits, injections=cfg.injections,
                                                margin=cfg.margin, critical_pp=cfg.critical_pp),
                             ctx.data.test, seed=seed)
    sens = sens_res.cells
    assert sens is not None  # a single-flip campaign has cells
    ci_pct = f"{cfg.confidence:.0%}"
    rep.add_table(f"Single-bit-flip sensitivity per layer and bit ({ci_pct} intervals)",
                  ["layer", "bit", "faults", "population", "mean drop pp", "drop CI lo", "drop CI hi", "max drop pp",
                   "critical rate", "critical CI lo", "critical CI hi"],
                  [[c.layer, c.bit, c.n, c.population, c.mean_drop_pp, c.drop_ci[0], c.drop_ci[1], c.max_drop_pp,
                    c.critical_rate, c.critical_ci[0], c.critical_ci[1]] for c in sens.cells])
    rep.figures.append(heatmap_figure(sens.cells))
    ber_base, ber_stats = sens.baseline_accuracy, list[TrialStats]()
    if cfg.bers:
        ber = inject_faults(ctx.model, replace(common, campaign="ber", bers=cfg.bers, trials=cfg.ber_trials,
                                               mode=cfg.ber_mode), ctx.data.test, seed=seed + 1)
        ber_base, ber_stats = ber.baseline_accuracy, list(ber.trials)
        rep.add_table(f"Weight-memory bit errors ({cfg.ber_mode}, {cfg.ber_trials} trials, {ci_pct} intervals)",
                      ["target", "BER", "mean bit errors", "mean drop pp", "CI lo", "CI hi", "max drop pp"],
                      [[s.target, s.level, s.mean_faults, s.mean_drop_pp, s.drop_ci[0], s.drop_ci[1], s.max_drop_pp]
                       for s in ber_stats])
        rep.figures.append(ber_figure(ber_stats))
    noise = inject_faults(ctx.model, replace(common, campaign="noise", noise_sigma=cfg.noise_sigma,
                                             trials=cfg.noise_trials), ctx.data.test, seed=seed + 2).trials
    rep.add_table(f"Gaussian noise on layer outputs (sigma = {cfg.noise_sigma} x output std)",
                  ["layer", "mean drop pp", "CI lo", "CI hi", "max drop pp"],
                  [[s.target, s.mean_drop_pp, s.drop_ci[0], s.drop_ci[1], s.max_drop_pp] for s in noise])
    drops = _drops(cfg, sens.layer_drops(), ber_stats, {s.target: s.mean_drop_pp for s in noise})
    ranking = rank_layers(drops)
    rep.add_table(f"Resilience ranking (by {cfg.rank_by}; most resilient first)",
                  ["rank", "layer", "drop pp", "mean single-bit-flip drop pp", "word"],
                  [[i + 1, name, drops[name], sens.layer_drops().get(name), sens.formats.get(name)]
                   for i, name in enumerate(ranking)])
    overall = sens.overall
    assert overall is not None
    rep.metrics.update({
        "test_accuracy": evaluate(ctx.model, ctx.data.test).accuracy,
        "subset_accuracy": sens.baseline_accuracy, "subset_images": n,
        "representation": ", ".join(sorted(set(sens.formats.values()))),
        "injections": len(sens.records), "injections_per_s": sens.injections_per_s,
        "mean_bitflip_drop_pp": overall.mean_drop_pp, "critical_fault_rate": overall.critical_rate,
        "critical_fault_rate_ci": list(overall.critical_ci),
        "most_resilient_layer": ranking[0], "most_sensitive_layer": ranking[-1], "rank_by": cfg.rank_by,
        "resilience_ranking": ranking,
    })
    for s in ber_stats:
        if s.target == "all" or len(sens.layers) == 1:
            rep.metrics[f"ber_{s.level:g}_drop_pp"] = s.mean_drop_pp
    rep.notes.append(f"{len(sens.records)} single bit flips on {n} test images in {sens.seconds:.1f} s "
                     f"({sens.injections_per_s:.1f} injections/s); subset accuracy {sens.baseline_accuracy:.4f} "
                     f"(BER campaign clean accuracy {ber_base:.4f}).")
    return StageResult(report=rep, artifacts={"resilience_ranking": ranking, "resilience_drop_pp": drops})


def _drops(cfg: ResilienceConfig, bitflip: dict[str, float], ber: list[TrialStats],
           noise: dict[str, float]) -> dict[str, float]:
    if cfg.rank_by == "bitflip":
        return dict(bitflip)
    if cfg.rank_by == "noise":
        return dict(noise)
    top = max(cfg.bers)
    return {s.target: s.mean_drop_pp for s in ber if s.level == top and s.target != "all"}
