"""Approximate weight memories: SRAM bit-error rate against the supply voltage (published and user
curves), per-chip fault maps, a model computing with a chip's faulty weights, memory-adaptive training
(MATIC, Kim et al., DATE 2018) and the lowest voltage within an accuracy budget."""

from crosslayer.memory.adapt import AdaptConfig, ChipAccuracy, chip_accuracy, chip_correct, memory_adaptive_train
from crosslayer.memory.chip import ChipMap, LayerFaults, apply_faults, fault_masks, sample_chip
from crosslayer.memory.curves import (
    BUILTIN_CURVES,
    FAULT_MODES,
    BerCurve,
    builtin_curve,
    load_curve,
    probit_fit,
    resolve_curve,
)
from crosslayer.memory.search import AdaptedPoint, adapted_search, lowest_within_budget, voltage_sweep
from crosslayer.memory.weights import DEFAULT_CODE_SPEC, WeightTarget, chip_weights, memory_layout, weight_targets

__all__ = ["BUILTIN_CURVES", "DEFAULT_CODE_SPEC", "FAULT_MODES", "AdaptConfig", "AdaptedPoint", "BerCurve",
           "ChipAccuracy", "ChipMap", "LayerFaults", "WeightTarget", "adapted_search", "apply_faults", "builtin_curve",
           "chip_accuracy", "chip_correct", "chip_weights", "fault_masks", "load_curve", "lowest_within_budget",
           "memory_adaptive_train", "memory_layout", "probit_fit", "resolve_curve", "sample_chip", "voltage_sweep",
           "weight_targets"]
