"""The verb of the resilience step: :func:`inject_faults` runs one fault or noise campaign on a copy of a
model and returns the per-layer (and per-bit) drops, the layer ranking and the campaign's own table.

Campaigns (``FaultConfig.campaign``):

- ``sensitivity``: single bit flips per (layer, bit) cell, Leveugle et al. (DATE 2009) sample sizes;
- ``statistical``: single bit flips over all sites of each layer, Leveugle-sized;
- ``ber``: weight-memory bit errors at each rate of ``bers``, flips or stuck-at (MATIC, Kim et al., DATE 2018);
- ``activation_flips``: ``flips`` bit flips per image (or every bit failing at the one rate in ``bers``) in each
  layer's input activations;
- ``noise``: Gaussian noise of ``noise_sigma`` x the output's std on each layer's output (Hanif et al., DATE 2018).

:func:`fault_report` turns a result into the report ``crosslayer faults`` writes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import DataSplits, ImageDataset
from crosslayer.errors import ConfigError
from crosslayer.quant import FixedPointSpec
from crosslayer.report import Report
from crosslayer.resilience.campaign import (
    CampaignResult,
    CellResult,
    bit_sensitivity,
    rank_layers,
    statistical_campaign,
)
from crosslayer.resilience.faults import check_ber
from crosslayer.resilience.inject import Representation
from crosslayer.resilience.multi import TrialStats, activation_bitflips, ber_campaign, noise_campaign
from crosslayer.resilience.plots import ber_figure, heatmap_figure

__all__ = ["FaultConfig", "FaultResult", "fault_report", "inject_faults"]

Campaign = Literal["sensitivity", "statistical", "ber", "activation_flips", "noise"]
_TITLES = {"sensitivity": "single bit flips (sensitivity)", "statistical": "single bit flips (statistical)",
           "activation_flips": "activation bit flips", "noise": "Gaussian noise on layer outputs"}


@dataclass(frozen=True, kw_only=True)
class FaultConfig(Config):
    """One campaign (see the module docstring) on the first ``eval_limit`` images (0 = all) of the layers
    ``layers`` (empty = every Conv2d / Linear), at bit positions ``bits`` (empty = every bit of the word).

    Weights are hit in their stored form: ``representation`` ``auto`` (integer codes if the layer is quantized,
    else float32), ``codes`` (a float model quantized to ``code_bits``-bit codes for the campaign) or
    ``float32``. Single flips: ``injections`` faults per cell (0: the sample size of ``margin`` /
    ``confidence``); a fault whose drop exceeds ``critical_pp`` is critical. BER, activation and noise campaigns
    repeat ``trials`` times (``mode``: BER faults flip or stick).
    """

    campaign: Campaign = "sensitivity"
    layers: tuple[str, ...] = ()
    bits: tuple[int, ...] = ()
    bers: tuple[float, ...] = ()
    injections: int = 0
    margin: float = 0.05
    confidence: float = 0.95
    critical_pp: float = 1.0
    representation: Representation = "auto"
    code_bits: int = 8
    mode: Literal["flip", "stuck"] = "flip"
    flips: int = 1
    trials: int = 3
    noise_sigma: float = 0.5
    eval_limit: int = 0

    def validate(self) -> None:
        for b in self.bers:
            check_ber(b, "bers")
        check_range("code_bits", self.code_bits, 2, 16)
        check_range("flips", self.flips, 1)
        check_range("trials", self.trials, 1)
        check_range("noise_sigma", self.noise_sigma, 0.0)
        check_range("eval_limit", self.eval_limit, 0)
        if self.campaign == "ber" and not self.bers:
            raise ConfigError("campaign 'ber' needs at least one bit-error rate in bers")
        if self.campaign == "activation_flips" and (len(self.bers) > 1 or len(self.bits) > 1):
            raise ConfigError("campaign 'activation_flips' takes at most one bit position and one bit-error rate")

    @property
    def target(self) -> Literal["weights", "activations"]:
        return "activations" if self.campaign in ("activation_flips", "noise") else "weights"


@dataclass(frozen=True)
class FaultResult:
    """What a campaign measured on ``images`` images: the clean accuracy (fraction), each layer's mean accuracy
    drop (``drops``, pp; for ``ber`` at the highest rate) and the layers ranked most resilient first.
    ``cells`` holds a single-flip campaign's per-(layer, bit), per-layer and overall cells; ``trials`` a
    repeated campaign's statistics per (target, level), ``"all"`` being every layer at once."""

    config: FaultConfig
    seed: int
    images: int
    baseline_accuracy: float
    drops: dict[str, float]
    ranking: list[str]
    cells: CampaignResult | None = None
    trials: tuple[TrialStats, ...] = ()

    @property
    def title(self) -> str:
        c = self.config
        return f"weight-memory BER ({c.mode})" if c.campaign == "ber" else _TITLES[c.campaign]

    def metrics(self) -> dict[str, Any]:
        """The figures as flat, JSON-friendly metrics (what ``crosslayer faults --json`` prints)."""
        m: dict[str, Any] = {"target": self.config.target, "images": self.images, "seed": self.seed,
                             "campaign": self.title, "baseline_accuracy": self.baseline_accuracy}
        res = self.cells
        if res is None:
            m["results"] = [{"target": s.target, "level": s.level, "trials": s.trials, "mean_drop_pp": s.mean_drop_pp,
                             "drop_ci": list(s.drop_ci), "max_drop_pp": s.max_drop_pp, "mean_faults": s.mean_faults}
                            for s in self.trials]
            m["resilience_ranking"] = self.ranking
            return m
        overall = res.overall
        assert overall is not None  # a finished campaign has its overall cell
        m.update({"formats": res.formats, "injections": len(res.records), "seconds": res.seconds,
                  "injections_per_s": res.injections_per_s, "mean_drop_pp": overall.mean_drop_pp,
                  "mean_drop_ci": list(overall.drop_ci), "critical_rate": overall.critical_rate,
                  "critical_ci": list(overall.critical_ci), "resilience_ranking": self.ranking,
                  "layers": [_cell(c) for c in res.layers], "cells": [_cell(c) for c in res.cells]})
        return m


def inject_faults(model: nn.Module, config: FaultConfig, data: ImageDataset | DataSplits, *,
                  seed: int = 0) -> FaultResult:
    """Run the campaign ``config`` names on a copy of ``model`` over ``data`` (a split, or the test split of
    :class:`DataSplits`); the model passed in is not modified."""
    test = data.test if isinstance(data, DataSplits) else data
    if config.eval_limit:
        test = test.subset(config.eval_limit)
    x, y = test.images, test.labels
    net = copy.deepcopy(model).eval()
    c = config
    layers = list(c.layers) or None
    code_spec = FixedPointSpec(bits=c.code_bits) if c.representation == "codes" else None
    if c.campaign in ("sensitivity", "statistical"):
        fn = bit_sensitivity if c.campaign == "sensitivity" else statistical_campaign
        res = fn(net, x, y, layers=layers, bits=c.bits, representation=c.representation, code_spec=code_spec,
                 injections=c.injections, margin=c.margin, confidence=c.confidence, critical_pp=c.critical_pp,
                 seed=seed)
        drops = res.layer_drops()
        return FaultResult(c, seed, len(y), res.baseline_accuracy, drops, rank_layers(drops), cells=res)
    if c.campaign == "ber":
        base, stats = ber_campaign(net, x, y, bers=c.bers, layers=layers, trials=c.trials, mode=c.mode,
                                   representation=c.representation, code_spec=code_spec, confidence=c.confidence,
                                   seed=seed)
        top = max(c.bers)
        drops = {s.target: s.mean_drop_pp for s in stats if s.level == top and s.target != "all"}
    elif c.campaign == "activation_flips":
        base, stats = activation_bitflips(net, x, y, layers=layers, flips=c.flips, bit=c.bits[0] if c.bits else None,
                                          ber=c.bers[0] if c.bers else None, trials=c.trials,
                                          confidence=c.confidence, seed=seed)
        drops = {s.target: s.mean_drop_pp for s in stats}
    else:
        base, stats = noise_campaign(net, x, y, sigma=c.noise_sigma, layers=layers, trials=c.trials,
                                     confidence=c.confidence, seed=seed)
        drops = {s.target: s.mean_drop_pp for s in stats}
    return FaultResult(c, seed, len(y), base, drops, rank_layers(drops), trials=tuple(stats))


def fault_report(result: FaultResult) -> Report:
    """The campaign's table (and heat map or BER plot) as a report of stage ``faults``."""
    rep = Report("faults")
    metrics = result.metrics()
    rep.metrics.update({k: v for k, v in metrics.items() if k not in ("results", "layers", "cells")})
    res = result.cells
    if res is not None:
        rep.add_table("Single bit flips", ["layer", "bit", "faults", "mean drop pp", "CI lo", "CI hi",
                                           "critical rate", "critical CI lo", "critical CI hi"],
                      [[c.layer, "any" if c.bit < 0 else c.bit, c.n, c.mean_drop_pp, c.drop_ci[0], c.drop_ci[1],
                        c.critical_rate, c.critical_ci[0], c.critical_ci[1]] for c in (res.cells or res.layers)])
        if res.cells:
            rep.figures.append(heatmap_figure(res.cells))
        return rep
    cfg = result.config
    level = {"ber": "BER", "noise": "sigma"}.get(cfg.campaign, "BER" if cfg.bers else "flips per image")
    rep.add_table(result.title, ["target", level, "trials", "mean faults", "mean drop pp", "CI lo", "CI hi",
                                 "max drop pp"],
                  [[s.target, s.level, s.trials, s.mean_faults, s.mean_drop_pp, s.drop_ci[0], s.drop_ci[1],
                    s.max_drop_pp] for s in result.trials])
    if cfg.campaign == "ber":
        rep.figures.append(ber_figure(list(result.trials)))
    return rep


def _cell(c: CellResult) -> dict[str, Any]:
    return {"layer": c.layer, "bit": c.bit, "n": c.n, "population": c.population, "mean_drop_pp": c.mean_drop_pp,
            "drop_ci": list(c.drop_ci), "max_drop_pp": c.max_drop_pp, "critical_rate": c.critical_rate,
            "critical_ci": list(c.critical_ci)}
