"""Weight fault-injection campaigns: per-layer x per-bit sensitivity and statistical fault injection.

Sample sizes follow Leveugle et al. (DATE 2009) unless a fixed number of injections is given; every
cell reports the mean accuracy drop with a Student-t interval and the share of *critical* faults
(drop above ``critical_pp``) with a Wilson interval. All faults of a campaign are evaluated together by
:func:`crosslayer.resilience.batched.campaign_correct_counts` (one clean pass over the images, then only
the network after each faulty layer, many faults per pass) on a fixed image subset; ``method="direct"``
patches the weight and runs the whole model per fault (the reference).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from crosslayer.config import check_range
from crosslayer.quant import FixedPointSpec
from crosslayer.resilience.batched import campaign_correct_counts, correct_counts, fault_correct_counts
from crosslayer.resilience.faults import check_bit, sample_distinct
from crosslayer.resilience.inject import LayerWeights, Representation, stored_weights
from crosslayer.resilience.stats import DROP_BOUNDS_PP, leveugle_sample_size, mean_interval, wilson_interval
from crosslayer.train import progress

__all__ = ["CampaignResult", "CellResult", "FaultRecord", "bit_sensitivity", "evaluate_sites", "rank_layers",
           "sample_sites", "statistical_campaign"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault and the accuracy drop it caused (percentage points)."""

    layer: str
    index: int
    bit: int
    drop_pp: float


@dataclass(frozen=True)
class CellResult:
    """Aggregate over the faults of one (layer, bit) cell, or one layer (``bit = -1``: any bit)."""

    layer: str
    bit: int
    n: int
    population: int
    mean_drop_pp: float
    drop_ci: tuple[float, float]
    max_drop_pp: float
    critical: int
    critical_rate: float
    critical_ci: tuple[float, float]


@dataclass
class CampaignResult:
    baseline_accuracy: float
    images: int
    formats: dict[str, str]
    records: list[FaultRecord] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    layers: list[CellResult] = field(default_factory=list)
    overall: CellResult | None = None
    seconds: float = 0.0

    @property
    def injections_per_s(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else float("nan")

    def layer_drops(self) -> dict[str, float]:
        return {c.layer: c.mean_drop_pp for c in self.layers}


def _aggregate(layer: str, bit: int, drops: list[float], population: int, critical_pp: float,
               confidence: float) -> CellResult:
    mean, lo, hi = mean_interval(drops, confidence, DROP_BOUNDS_PP)
    crit = sum(d > critical_pp for d in drops)
    clo, chi = wilson_interval(crit, len(drops), confidence)
    return CellResult(layer, bit, len(drops), population, mean, (lo, hi), max(drops) if drops else float("nan"),
                      crit, crit / max(1, len(drops)), (clo, chi))


def evaluate_sites(model: nn.Module, lw: dict[str, LayerWeights], sites: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   images: torch.Tensor, labels: torch.Tensor, base_correct: int, method: str = "auto",
                   desc: str = "fault injection") -> list[FaultRecord]:
    """Single bit flips ``sites[layer] = (flat indices, bits)`` of layers in ``lw`` (from :func:`stored_weights`),
    one fault at a time, evaluated in batches; the drop is relative to ``base_correct`` correct images."""
    records: list[FaultRecord] = []
    n = len(labels)
    total = sum(int(i.numel()) for i, _ in sites.values())
    with progress() as bar:
        task = bar.add_task(desc, total=total, info="")
        if method == "auto":
            faults = {name: (index, lw[name].faulty_values(index, bit)) for name, (index, bit) in sites.items()}
            _, by_layer = campaign_correct_counts(model, faults, images, labels)
        else:
            by_layer = {}
            for name, (index, bit) in sites.items():
                values = lw[name].faulty_values(index, bit)
                by_layer[name] = fault_correct_counts(model, name, index, values, images, labels, method=method)
                bar.update(task, advance=int(index.numel()), info=name)
        for name, (index, bit) in sites.items():
            drops = (base_correct - by_layer[name]).double() * 100.0 / n
            records += [FaultRecord(name, int(i), int(b), float(d))
                        for i, b, d in zip(index.tolist(), bit.tolist(), drops.tolist(), strict=True)]
        bar.update(task, completed=total)
    return records


def _word_bits(lw: LayerWeights, bits: Sequence[int] | None) -> list[int]:
    if not bits:
        return list(range(lw.fmt.width))
    for b in bits:
        check_bit(b, lw.fmt, "bits")
    return sorted(set(bits), reverse=True)


def _check_common(margin: float, confidence: float, injections: int, critical_pp: float) -> None:
    check_range("margin", margin, 0.0, 1.0, lo_open=True, hi_open=True)
    check_range("confidence", confidence, 0.0, 1.0, lo_open=True, hi_open=True)
    check_range("injections", injections, 0)
    check_range("critical_pp", critical_pp, 0.0, 100.0)


def bit_sensitivity(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                    layers: Sequence[str] | None = None, bits: Sequence[int] | None = None,
                    representation: Representation = "auto", code_spec: FixedPointSpec | None = None,
                    injections: int = 0, margin: float = 0.05, confidence: float = 0.95, critical_pp: float = 1.0,
                    seed: int = 0, method: str = "auto") -> CampaignResult:
    """Single-bit-flip sensitivity of every (layer, bit) cell.

    Each cell's population is the layer's weights at that bit; ``injections`` faults per cell, or the
    Leveugle sample size for ``margin`` / ``confidence`` when ``injections`` is 0. Distinct weights
    are drawn without replacement (seeded).
    """
    _check_common(margin, confidence, injections, critical_pp)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with stored_weights(model, layers, representation, code_spec) as lw:
        base = correct_counts(model, images, labels)
        sites: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, w in lw.items():
            numel = w.weight.numel()
            n = min(numel, injections) if injections else leveugle_sample_size(numel, margin, confidence)
            idx, bit = [], []
            for b in _word_bits(w, bits):
                idx.append(torch.randperm(numel, generator=gen)[:n])
                bit.append(torch.full((n,), b, dtype=torch.int64))
            sites[name] = (torch.cat(idx), torch.cat(bit))
        records = evaluate_sites(model, lw, sites, images, labels, base, method, "bit sensitivity")
        formats = {k: str(v.fmt) for k, v in lw.items()}
        pops = {k: v.weight.numel() for k, v in lw.items()}
    res = CampaignResult(base / len(labels), len(labels), formats, records, seconds=time.perf_counter() - t0)
    for name in pops:
        mine = [r for r in records if r.layer == name]
        for b in sorted({r.bit for r in mine}, reverse=True):
            res.cells.append(_aggregate(name, b, [r.drop_pp for r in mine if r.bit == b], pops[name], critical_pp,
                                        confidence))
        res.layers.append(_aggregate(name, -1, [r.drop_pp for r in mine], pops[name] * len({r.bit for r in mine}),
                                     critical_pp, confidence))
    res.overall = _aggregate("all", -1, [r.drop_pp for r in records], sum(c.population for c in res.layers),
                             critical_pp, confidence)
    return res


def statistical_campaign(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                         layers: Sequence[str] | None = None, bits: Sequence[int] | None = None,
                         representation: Representation = "auto", code_spec: FixedPointSpec | None = None,
                         injections: int = 0, margin: float = 0.05, confidence: float = 0.95,
                         critical_pp: float = 1.0, seed: int = 0, method: str = "auto") -> CampaignResult:
    """Statistical fault injection over the whole fault population (every stored bit of every targeted
    weight): ``injections`` distinct single bit flips, or Leveugle's sample size, drawn uniformly."""
    _check_common(margin, confidence, injections, critical_pp)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    with stored_weights(model, layers, representation, code_spec) as lw:
        base = correct_counts(model, images, labels)
        names = list(lw)
        widths = [len(_word_bits(lw[n], bits)) for n in names]
        sizes = [lw[n].weight.numel() for n in names]
        population = sum(s * w for s, w in zip(sizes, widths, strict=True))
        n = min(population, injections) if injections else leveugle_sample_size(population, margin, confidence)
        sites = sample_sites(lw, n, bits, gen)
        records = evaluate_sites(model, lw, sites, images, labels, base, method, "statistical FI")
        formats = {k: str(v.fmt) for k, v in lw.items()}
    res = CampaignResult(base / len(labels), len(labels), formats, records, seconds=time.perf_counter() - t0)
    for name, size, width in zip(names, sizes, widths, strict=True):
        mine_d = [r.drop_pp for r in records if r.layer == name]
        if mine_d:
            res.layers.append(_aggregate(name, -1, mine_d, size * width, critical_pp, confidence))
    res.overall = _aggregate("all", -1, [r.drop_pp for r in records], population, critical_pp, confidence)
    return res


def sample_sites(lw: dict[str, LayerWeights], n: int, bits: Sequence[int] | None,
                 generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``n`` distinct single-bit sites drawn uniformly over every (weight, bit) of the layers in ``lw``,
    grouped per layer as ``(flat indices, bits)`` in draw order."""
    names = list(lw)
    widths = [len(_word_bits(lw[k], bits)) for k in names]
    sizes = [lw[k].weight.numel() for k in names]
    flat = sample_distinct(sum(s * w for s, w in zip(sizes, widths, strict=True)), n, generator)
    sites: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    start = 0
    for name, size, width in zip(names, sizes, widths, strict=True):
        mine = flat[(flat >= start) & (flat < start + size * width)] - start
        table = torch.tensor(_word_bits(lw[name], bits), dtype=torch.int64)
        if mine.numel():
            sites[name] = (mine // width, table[mine % width])
        start += size * width
    return sites


def rank_layers(drops: dict[str, float]) -> list[str]:
    """Layer names, most resilient (smallest accuracy drop) first; ties keep the model's order."""
    order = list(drops)
    return sorted(order, key=lambda n: (drops[n], order.index(n)))
