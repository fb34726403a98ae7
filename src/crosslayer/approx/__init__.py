"""Approximate 8-bit multipliers: behavioural models, truth tables, error metrics, fast bit-exact
emulation of quantized layers, approximation-aware fine-tuning and per-layer selection."""

from crosslayer.approx.catalog import DEFAULT_NAMES, FAMILIES, get_multiplier, library, resolve
from crosslayer.approx.emulate import (
                                       ApproxLayer,
                                       approx_layers,
                                       approximable_layers,
                                       approximate_model,
                                       assignment_of,
                                       integer_accumulate,
)
from crosslayer.approx.finetune import finetune
from crosslayer.approx.metrics import ErrorMetrics, error_metrics, operand_histograms, uniform_metrics
from crosslayer.approx.reference import IntegerReference, integer_reference_model, reference_accumulate
from crosslayer.approx.select import (
                                       Selection,
                                       SweepPoint,
                                       as_accuracy,
                                       correct_on,
                                       greedy_select,
                                       layer_macs,
                                       paired_loss,
                                       per_layer_sweep,
                                       power_saving,
                                       sensitivity_ranking,
                                       uniform_sweep,
)
from crosslayer.approx.tables import Multiplier, load_table, save_table

__all__ = ["DEFAULT_NAMES", "FAMILIES", "ApproxLayer", "ErrorMetrics", "IntegerReference", "Multiplier", "Selection",
           "SweepPoint", "approx_layers", "approximable_layers", "approximate_model", "as_accuracy",
           "assignment_of", "correct_on",
           "error_metrics", "finetune", "get_multiplier", "greedy_select", "integer_accumulate",
           "integer_reference_model", "layer_macs", "library", "load_table", "operand_histograms",
           "paired_loss", "per_layer_sweep", "power_saving", "reference_accumulate", "resolve", "save_table",
           "sensitivity_ranking", "uniform_metrics", "uniform_sweep"]
