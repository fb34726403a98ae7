"""One fault-injection run from command-line style options: pick the campaign, run it, and turn
its outcome into flat metrics and a :class:`~crosslayer.report.Report` (used by ``crosslayer faults``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec
from crosslayer.report import Report
from crosslayer.resilience.campaign import CampaignResult, bit_sensitivity, rank_layers, statistical_campaign
from crosslayer.resilience.faults import check_ber
from crosslayer.resilience.inject import Representation
from crosslayer.resilience.multi import TrialStats, activation_bitflips, ber_campaign
from crosslayer.resilience.plots import ber_figure, heatmap_figure

__all__ = ["FaultRunOptions", "run_faults"]


@dataclass(frozen=True, kw_only=True)
class FaultRunOptions(Config):
    """What ``crosslayer faults`` asks for."""

    target: Literal["weights", "activations"] = "weights"
    campaign: Literal["sensitivity", "statistical"] = "sensitivity"
    layers: tuple[str, ...] = ()
    bits: tuple[int, ...] = ()
    ber: float | None = None
    injections: int = 0
    margin: float = 0.05
    confidence: float = 0.95
    critical_pp: float = 1.0
    representation: Representation = "auto"
    code_bits: int = 8
    mode: Literal["flip", "stuck"] = "flip"
    flips: int = 1
    trials: int = 3
    seed: int = 0

    def validate(self) -> None:
        if self.target not in ("weights", "activations"):
            raise ConfigError(f"--target {self.target!r}; allowed weights, activations")
        if self.campaign not in ("sensitivity", "statistical"):
            raise ConfigError(f"--campaign {self.campaign!r}; allowed sensitivity, statistical")
        if self.representation not in ("auto", "codes", "float32"):
            raise ConfigError(f"--representation {self.representation!r}; allowed auto, codes, float32")
        if self.mode not in ("flip", "stuck"):
            raise ConfigError(f"--mode {self.mode!r}; allowed flip, stuck")
        if self.ber is not None:
            check_ber(self.ber, "--ber")
        check_range("--code-bits", self.code_bits, 2, 16)
        check_range("--flips", self.flips, 1)
        check_range("--trials", self.trials, 1)
        if self.target == "activations" and len(self.bits) > 1:
            raise ConfigError("--target activations takes at most one --bits position")



def run_faults(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               opts: FaultRunOptions) -> tuple[dict[str, Any], Report]:
    """Run the campaign ``opts`` describes; flat metrics (JSON-friendly) and a report with tables and plots."""
    model = model.eval()
    rep = Report("faults")
    code_spec = FixedPointSpec(bits=opts.code_bits) if opts.representation == "codes" else None
    layers = list(opts.layers) or None
    metrics: dict[str, Any] = {"target": opts.target, "images": len(labels), "seed": opts.seed}
    if opts.target == "activations":
        base, stats = activation_bitflips(model, images, labels, layers=layers, flips=opts.flips,
                                          bit=opts.bits[0] if opts.bits else None, ber=opts.ber, trials=opts.trials,
                                          confidence=opts.confidence, seed=opts.seed)
        metrics.update(campaign="activation bit flips", baseline_accuracy=base)
        return _trial_output(metrics, rep, stats, "flips per image" if opts.ber is None else "BER")
    if opts.ber is not None:
        base, stats = ber_campaign(model, images, labels, bers=[opts.ber], layers=layers, trials=opts.trials,
                                   mode=opts.mode, representation=opts.representation, code_spec=code_spec,
                                   confidence=opts.confidence, seed=opts.seed)
        metrics.update(campaign=f"weight-memory BER ({opts.mode})", baseline_accuracy=base)
        metrics, rep = _trial_output(metrics, rep, stats, "BER")
        rep.figures.append(ber_figure(stats))
        return metrics, rep
    fn = bit_sensitivity if opts.campaign == "sensitivity" else statistical_campaign
    res = fn(model, images, labels, layers=layers, bits=opts.bits, representation=opts.representation,
             code_spec=code_spec, injections=opts.injections, margin=opts.margin, confidence=opts.confidence,
             critical_pp=opts.critical_pp, seed=opts.seed)
    return _campaign_output(metrics, rep, res, opts)


def _trial_output(metrics: dict[str, Any], rep: Report, stats: Sequence[TrialStats],
                  level: str) -> tuple[dict[str, Any], Report]:
    rows = [{"target": s.target, "level": s.level, "trials": s.trials, "mean_drop_pp": s.mean_drop_pp,
             "drop_ci": list(s.drop_ci), "max_drop_pp": s.max_drop_pp, "mean_faults": s.mean_faults} for s in stats]
    metrics["results"] = rows
    drops = {s.target: s.mean_drop_pp for s in stats if s.target != "all"}
    metrics["resilience_ranking"] = rank_layers(drops)
    rep.add_table(metrics["campaign"], ["target", level, "trials", "mean faults", "mean drop pp", "CI lo", "CI hi",
                                        "max drop pp"],
                  [[s.target, s.level, s.trials, s.mean_faults, s.mean_drop_pp, s.drop_ci[0], s.drop_ci[1],
                    s.max_drop_pp] for s in stats])
    rep.metrics.update({k: v for k, v in metrics.items() if k != "results"})
    return metrics, rep


def _campaign_output(metrics: dict[str, Any], rep: Report, res: CampaignResult,
                     opts: FaultRunOptions) -> tuple[dict[str, Any], Report]:
    overall = res.overall
    assert overall is not None
    metrics.update({
        "campaign": f"single bit flips ({opts.campaign})", "baseline_accuracy": res.baseline_accuracy,
        "formats": res.formats, "injections": len(res.records), "seconds": res.seconds,
        "injections_per_s": res.injections_per_s, "mean_drop_pp": overall.mean_drop_pp,
        "mean_drop_ci": list(overall.drop_ci), "critical_rate": overall.critical_rate,
        "critical_ci": list(overall.critical_ci), "resilience_ranking": rank_layers(res.layer_drops()),
        "layers": [_cell(c) for c in res.layers], "cells": [_cell(c) for c in res.cells],
    })
    rows = res.cells or res.layers
    rep.add_table("Single bit flips", ["layer", "bit", "faults", "mean drop pp", "CI lo", "CI hi", "critical rate",
                                       "critical CI lo", "critical CI hi"],
                  [[c.layer, "any" if c.bit < 0 else c.bit, c.n, c.mean_drop_pp, c.drop_ci[0], c.drop_ci[1],
                    c.critical_rate, c.critical_ci[0], c.critical_ci[1]] for c in rows])
    if res.cells:
        rep.figures.append(heatmap_figure(res.cells))
    rep.metrics.update({k: v for k, v in metrics.items() if k not in ("layers", "cells")})
    return metrics, rep


def _cell(c: Any) -> dict[str, Any]:
    return {"layer": c.layer, "bit": c.bit, "n": c.n, "population": c.population, "mean_drop_pp": c.mean_drop_pp,
            "drop_ci": list(c.drop_ci), "max_drop_pp": c.max_drop_pp, "critical_rate": c.critical_rate,
            "critical_ci": list(c.critical_ci)}
