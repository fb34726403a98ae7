"""The design space of the co-design search: per-layer pruning ratio, weight and activation bit widths and
approximate multiplier, and for the network the accelerator dataflow and (optionally) in-memory execution.

The per-layer decisions come from the model's own ``nn.Conv2d`` / ``nn.Linear`` layers (in module order), so
the space fits any model. A :class:`Design` is one point of it; a :class:`SearchSpace` turns an Optuna trial's
parameters into a design (``decode``), so a trial's configuration is reproducible from the study alone.

Two parameterisations share the same :class:`Design`:

- ``layerwise`` (the search): every layer has its own ``<layer>:density`` (the kept fraction of its weights,
  log-uniform in ``[1 - max_sparsity, 1]``, so 90 %, 95 % and 98 % sparsity are as far apart as they are in
  cost; sparsity = 1 - density, rounded to 1e-4), ``<layer>:weight_bits``,
  ``<layer>:act_bits`` and ``<layer>:multiplier``, plus ``dataflow`` and ``execution`` (HAQ, Wang et al.,
  CVPR 2019, and AMC, He et al., ECCV 2018, choose bit widths and pruning ratios per layer in the same spirit).
  The multiplier applies to a layer with 8-bit weights and activations (:data:`MULTIPLIER_BITS`); with
  narrower operands the layer decodes to the exact multiplier, so the space stays the same for every trial;
- with channel pruning on (``max_channel_cut`` > 0), both add ``<group>:channels`` per prunable channel group
  (:func:`crosslayer.prune.prunable_groups`, keyed by its first producer): the fraction of the group's output
  channels kept, uniform in ``[1 - max_channel_cut, 1]`` (rounded to 1e-4), asked after the layers' choices;
  the channels go by structured pruning (:func:`crosslayer.prune.prune_structured`) before the weights are
  pruned, so activations and every consumer's inputs shrink too, which weight sparsity alone cannot do (AMC,
  He et al., ECCV 2018, searches these ratios per layer). Without it nothing is asked and ``channels`` is empty;
- with the weight-memory voltage knob (``memory_voltages`` non-empty), both add the network-level
  ``memory_voltage`` (categorical over those voltages, asked last), the supply of the SRAM holding the weights;
  without it nothing is asked and a design's ``memory_voltage`` is None (nominal);
- ``grid``: the existing sweep of :mod:`crosslayer.explore.sweep` (scheme x global sparsity x weight bits, 8-bit
  activations, exact multipliers). Its magnitude masks are per-layer magnitude thresholds, so a grid point is
  the layerwise design with the per-layer sparsities that scheme reaches on the baseline's weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from crosslayer.errors import ConfigError
from crosslayer.prune import layer_sparsity, magnitude_masks, prunable_weights
from crosslayer.quant.pipeline import quantizable_layers

__all__ = ["EXECUTIONS", "MIN_DATAFLOWS", "MULTIPLIER_BITS", "Design", "LayerChoice", "SearchSpace",
           "approximable_reason", "search_layers"]

MULTIPLIER_BITS = 8
"""The approximate multipliers are 8 x 8 designs: a layer takes one only with 8-bit weights and activations; a
narrower layer runs on an exact multiplier of its own width (the cost model scales its energy with the widths)."""
MIN_DATAFLOWS = ("min-energy", "min-latency")
"""Dataflow choices that let the cost model pick each layer's dataflow (least energy or least latency)."""
EXECUTIONS = ("digital", "imc")
SpaceMode = Literal["layerwise", "grid"]


@dataclass(frozen=True)
class LayerChoice:
    """What one layer gets: fraction of its weights pruned, weight / input-activation bits, multiplier."""

    sparsity: float
    weight_bits: int
    act_bits: int
    multiplier: str = "exact"


@dataclass(frozen=True)
class Design:
    """One point of the space: a choice per layer (by module name) and the network's dataflow and execution;
    ``memory_voltage`` is the weight memory's supply in volts (None: nominal, fault-free, the memory not modelled;
    set only when the search's voltage knob is on); ``channels`` maps a channel group (its first producer's
    name) to the fraction of its output channels kept (empty: no channel pruning)."""

    layers: dict[str, LayerChoice]
    dataflow: str = "min-energy"
    execution: str = "digital"
    memory_voltage: float | None = None
    channels: dict[str, float] = field(default_factory=dict)

    @property
    def channel_cut(self) -> dict[str, float]:
        """The fraction of channels removed per group, for groups that lose any (what
        :func:`crosslayer.prune.prune_structured` takes as ``amount``)."""
        return {k: round(1.0 - keep, 4) for k, keep in self.channels.items() if keep < 1.0}

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"layers": {n: asdict(c) for n, c in self.layers.items()}, "dataflow": self.dataflow,
                               "execution": self.execution}
        if self.memory_voltage is not None:  # absent when off: the records of a search without the knob unchanged
            doc["memory_voltage"] = self.memory_voltage
        if self.channels:  # likewise for channel pruning
            doc["channels"] = dict(self.channels)
        return doc

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> Design:
        """The design of a :meth:`to_json` record; a record without ``memory_voltage`` reads as nominal (None)."""
        try:
            layers = {str(n): LayerChoice(sparsity=float(c["sparsity"]), weight_bits=int(c["weight_bits"]),
                                          act_bits=int(c["act_bits"]), multiplier=str(c.get("multiplier", "exact")))
                      for n, c in dict(doc["layers"]).items()}
            raw = doc.get("memory_voltage")
            voltage = None if raw is None else float(raw)
            channels = {str(k): float(v) for k, v in dict(doc.get("channels", {})).items()}
            bad = {k: v for k, v in channels.items() if not 0.0 < v <= 1.0}
            if bad:
                raise ValueError(f"channels kept must be fractions in (0, 1], got {bad}")
            return Design(layers, str(doc.get("dataflow", "min-energy")), str(doc.get("execution", "digital")),
                          voltage, channels)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a design record: {exc}") from exc

    def summary(self) -> str:
        """One line per layer, for tables: ``conv1 s0.50 w4 a8 drum5`` (then ``channels conv1 0.50`` for the
        groups that lose channels and ``memory 0.45 V`` when set)."""
        text = "; ".join(f"{n} s{c.sparsity:.2f} w{c.weight_bits} a{c.act_bits} {c.multiplier}"
                         for n, c in self.layers.items())
        cut = {k: self.channels[k] for k in self.channel_cut}
        if cut:
            text += "; channels kept " + ", ".join(f"{k} {v:.2f}" for k, v in cut.items())
        return text if self.memory_voltage is None else f"{text}; memory {self.memory_voltage:g} V"


def search_layers(model: nn.Module) -> list[str]:
    """The layers the search decides for: every ``nn.Conv2d`` / ``nn.Linear`` of ``model``, in module order."""
    names = quantizable_layers(model)
    if not names:
        raise ConfigError(f"model {type(model).__name__} has no Conv2d or Linear layer to search over")
    return names


def approximable_reason(model: nn.Module, name: str) -> str | None:
    """Why layer ``name`` cannot take an approximate multiplier (None when it can): the multiplier
    emulation (:class:`crosslayer.approx.ApproxLayer`) computes ungrouped, zero-padded convolutions and linear
    layers only."""
    m = model.get_submodule(name)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return f"grouped / depthwise convolution (groups = {m.groups})"
        if m.padding_mode != "zeros":
            return f"padding_mode = {m.padding_mode!r}"
    return None


@dataclass(frozen=True)
class SearchSpace:
    """The choices per layer and for the network, and the mapping from trial parameters to a :class:`Design`.

    ``grid_sparsity`` holds, for the ``grid`` mode, the per-layer sparsities each (scheme, sparsity) reaches on
    the baseline's weights (computed once by :meth:`grid`). ``channel_groups`` are the prunable channel groups
    (keys of :func:`crosslayer.prune.prunable_groups`) whose kept fraction the layerwise mode searches down to
    ``1 - max_channel_cut`` (none when the cut is 0).
    """

    layers: tuple[str, ...]
    max_sparsity: float = 0.98
    weight_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    act_bits: tuple[int, ...] = (4, 5, 6, 8)
    multipliers: tuple[str, ...] = ("exact",)
    dataflows: tuple[str, ...] = ("min-energy",)
    executions: tuple[str, ...] = ("digital",)
    exact_only: dict[str, str] = field(default_factory=dict)
    mode: SpaceMode = "layerwise"
    grid_sparsity: dict[str, dict[str, float]] = field(default_factory=dict)
    grid_act_bits: int = 8
    memory_voltages: tuple[float, ...] = ()
    channel_groups: tuple[str, ...] = ()
    max_channel_cut: float = 0.0

    # ----- building ---------------------------------------------------------------------------------
    @staticmethod
    def for_model(model: nn.Module, **choices: Any) -> SearchSpace:
        """The layerwise space of ``model``: its Conv2d / Linear layers; those an approximate multiplier cannot
        take (see :func:`approximable_reason`) are kept exact, with the reason in ``exact_only``."""
        layers = tuple(search_layers(model))
        exact_only = {n: r for n in layers if (r := approximable_reason(model, n)) is not None}
        space = SearchSpace(layers=layers, exact_only=exact_only, **choices)
        space.check()
        return space

    @staticmethod
    def grid(model: nn.Module, schemes: Sequence[str], sparsities: Sequence[float], bits: Sequence[int],
             act_bits: int = 8, dataflow: str = "min-energy", memory_voltages: Sequence[float] = ()) -> SearchSpace:
        """The grid sweep's space (:func:`crosslayer.explore.sweep.sweep`): scheme x global sparsity x weight bits,
        ``act_bits`` activations, exact multipliers, the cost model's least-energy dataflow per layer."""
        layers = tuple(search_layers(model))
        weights = {k: v.detach() for k, v in prunable_weights(model).items()}
        table: dict[str, dict[str, float]] = {}
        for scheme in schemes:
            for s in sparsities:
                masks, _ = magnitude_masks(weights, scheme, float(s))
                per = layer_sparsity(masks)
                table[_grid_key(scheme, float(s))] = {n: per[f"{n}.weight" if n else "weight"] for n in layers}
        space = SearchSpace(layers=layers, weight_bits=tuple(int(b) for b in bits), act_bits=(act_bits,),
                            dataflows=(dataflow,), mode="grid", grid_sparsity=table, grid_act_bits=act_bits,
                            memory_voltages=tuple(float(v) for v in memory_voltages))
        space.check()
        return space

    def check(self) -> None:
        from crosslayer.approx import get_multiplier

        if not 0.0 <= self.max_sparsity < 1.0:
            raise ConfigError(f"max_sparsity = {self.max_sparsity} must be in [0, 1)")
        for what, values, lo, hi in (("weight_bits", self.weight_bits, 2, 16), ("act_bits", self.act_bits, 2, 16)):
            if not values:
                raise ConfigError(f"{what} lists no bit width")
            bad = [b for b in values if not lo <= b <= hi]
            if bad:
                raise ConfigError(f"{what} = {list(values)}: widths must be in {lo}-{hi}")
        if not self.multipliers:
            raise ConfigError("multipliers lists no multiplier; give at least 'exact'")
        for m in self.multipliers:
            get_multiplier(m)  # an unknown name raises with the allowed ones
        if any(m != "exact" for m in self.multipliers) and max(*self.weight_bits, *self.act_bits) > 8:
            raise ConfigError("approximate multipliers are 8-bit designs: with multipliers other than 'exact', "
                              "weight_bits and act_bits must be at most 8")
        for df in self.dataflows:
            if df not in MIN_DATAFLOWS and df not in ("WS", "OS", "RS", "IS"):
                raise ConfigError(f"dataflow {df!r} is unknown; allowed: {', '.join(MIN_DATAFLOWS)}, WS, OS, RS, IS")
        for ex in self.executions:
            if ex not in EXECUTIONS:
                raise ConfigError(f"execution {ex!r} is unknown; allowed: {', '.join(EXECUTIONS)}")
        if len(set(self.memory_voltages)) != len(self.memory_voltages):
            raise ConfigError(f"memory_voltages = {list(self.memory_voltages)} lists a voltage twice")
        if self.memory_voltages and "imc" in self.executions:
            raise ConfigError("the weight-memory voltage and in-memory execution exclude each other")
        if not 0.0 <= self.max_channel_cut < 1.0:
            raise ConfigError(f"max_channel_cut = {self.max_channel_cut} must be in [0, 1)")
        if self.channel_groups and (self.mode == "grid" or self.max_channel_cut == 0.0):
            raise ConfigError("channel_groups need the layerwise mode and max_channel_cut > 0")

    @property
    def grid_size(self) -> int:
        """Points of the ``grid`` mode (scheme x sparsity x weight bits, times the memory voltages)."""
        return len(self.grid_sparsity) * len(self.weight_bits) * max(1, len(self.memory_voltages))

    # ----- Optuna -----------------------------------------------------------------------------------
    def grid_search_space(self) -> dict[str, list[Any]]:
        """The parameter grid of the ``grid`` mode, for :class:`optuna.samplers.GridSampler`."""
        if self.mode != "grid":
            raise ConfigError("grid_search_space needs a grid space (SearchSpace.grid)")
        grid: dict[str, list[Any]] = {"point": sorted(self.grid_sparsity), "weight_bits": list(self.weight_bits)}
        if self.memory_voltages:
            grid["memory_voltage"] = list(self.memory_voltages)
        return grid

    def suggest(self, trial: Any) -> Design:
        """Ask ``trial`` (an ``optuna.Trial``) for every parameter of the space; the design it names."""
        if self.mode == "grid":
            trial.suggest_categorical("point", sorted(self.grid_sparsity))
            trial.suggest_categorical("weight_bits", list(self.weight_bits))
        else:
            for n in self.layers:
                if self.max_sparsity > 0:
                    trial.suggest_float(f"{n}:density", 1.0 - self.max_sparsity, 1.0, log=True)
                trial.suggest_categorical(f"{n}:weight_bits", list(self.weight_bits))
                trial.suggest_categorical(f"{n}:act_bits", list(self.act_bits))
                if n not in self.exact_only and len(self.multipliers) > 1:
                    trial.suggest_categorical(f"{n}:multiplier", list(self.multipliers))
            for key in self.channel_groups:
                trial.suggest_float(f"{key}:channels", 1.0 - self.max_channel_cut, 1.0)
            if len(self.dataflows) > 1:
                trial.suggest_categorical("dataflow", list(self.dataflows))
            if len(self.executions) > 1:
                trial.suggest_categorical("execution", list(self.executions))
        if self.memory_voltages:  # last, so that a search without the knob asks exactly what it asked before
            trial.suggest_categorical("memory_voltage", list(self.memory_voltages))
        return self.decode(trial.params)

    def uniform_params(self, sparsity: float, weight_bits: int, act_bits: int,
                       channel_cut: float = 0.0) -> dict[str, Any]:
        """Trial parameters of the uniform design: every layer at ``sparsity`` (within the space's range),
        ``weight_bits`` / ``act_bits`` (each the nearest choice of the space), every channel group losing
        ``channel_cut`` of its channels (within the space's range), exact multipliers, the first dataflow and
        execution and the highest weight-memory voltage: an anchor to enqueue before sampling."""
        if self.mode == "grid":
            raise ConfigError("warm_start designs are for the layerwise space, not the grid sweep")

        def nearest(choices: tuple[int, ...], want: int) -> int:
            return min(choices, key=lambda c: (abs(c - want), -c))

        density = min(1.0, max(1.0 - self.max_sparsity, 1.0 - float(sparsity)))
        params: dict[str, Any] = {}
        for n in self.layers:
            if self.max_sparsity > 0:
                params[f"{n}:density"] = density
            params[f"{n}:weight_bits"] = nearest(self.weight_bits, int(weight_bits))
            params[f"{n}:act_bits"] = nearest(self.act_bits, int(act_bits))
            if n not in self.exact_only and len(self.multipliers) > 1:
                params[f"{n}:multiplier"] = "exact" if "exact" in self.multipliers else self.multipliers[0]
        keep = min(1.0, max(1.0 - self.max_channel_cut, 1.0 - float(channel_cut)))
        for key in self.channel_groups:
            params[f"{key}:channels"] = keep
        if len(self.dataflows) > 1:
            params["dataflow"] = self.dataflows[0]
        if len(self.executions) > 1:
            params["execution"] = self.executions[0]
        if self.memory_voltages:
            params["memory_voltage"] = max(self.memory_voltages)
        return params

    def decode(self, params: Mapping[str, Any]) -> Design:
        """The design of a trial's parameters (as ``study.trials[i].params`` holds them)."""
        try:
            voltage = float(params["memory_voltage"]) if self.memory_voltages else None
            if self.mode == "grid":
                per = self.grid_sparsity[str(params["point"])]
                wb = int(params["weight_bits"])
                return Design({n: LayerChoice(per[n], wb, self.grid_act_bits) for n in self.layers},
                              self.dataflows[0], "digital", voltage)
            layers = {}
            for n in self.layers:
                wb, ab = int(params[f"{n}:weight_bits"]), int(params[f"{n}:act_bits"])
                mult = str(params.get(f"{n}:multiplier", self.multipliers[0]))
                if n in self.exact_only or (wb, ab) != (MULTIPLIER_BITS, MULTIPLIER_BITS):
                    mult = "exact"  # no 8x8 design on narrower operands: an exact multiplier of the layer's width
                sparsity = round(1.0 - float(params.get(f"{n}:density", 1.0)), 4)
                layers[n] = LayerChoice(max(sparsity, 0.0), wb, ab, mult)
            channels = {k: min(1.0, round(float(params[f"{k}:channels"]), 4)) for k in self.channel_groups}
            return Design(layers, str(params.get("dataflow", self.dataflows[0])),
                          str(params.get("execution", self.executions[0])), voltage, channels)
        except KeyError as exc:
            raise ConfigError(f"trial parameters lack {exc}; they belong to another search space") from exc

    def describe(self) -> dict[str, Any]:
        """The space as plain JSON (stored with the study; its digest guards against mixing spaces)."""
        d = asdict(self)
        d["layers"] = list(self.layers)
        if not self.memory_voltages:
            del d["memory_voltages"]  # without the knob: the description (and digest) of a search before it
        else:
            d["memory_voltages"] = list(self.memory_voltages)
        if not self.channel_groups and not self.max_channel_cut:
            del d["channel_groups"], d["max_channel_cut"]  # likewise without channel pruning
        else:
            d["channel_groups"] = list(self.channel_groups)
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


def _grid_key(scheme: str, sparsity: float) -> str:
    return f"{scheme}@{sparsity:g}"
