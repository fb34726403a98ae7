"""Fixed-point quantization: pure functions, quantized layers, calibration, QAT, binary / ternary, sweep."""

from crosslayer.quant.calibrate import CalibrationConfig, calibrate
from crosslayer.quant.fixed_point import (
    FixedPointSpec,
    QuantizedTensor,
    dequantize,
    fake_quantize,
    qformat,
    qrange,
    quantize_tensor,
    round_to_codes,
    scale_for,
)
from crosslayer.quant.layers import (
    QuantConv2d,
    QuantLayer,
    QuantLinear,
    calibrating,
    iter_quant_layers,
    quantize_model,
    weight_codes,
)
from crosslayer.quant.pipeline import QuantizeConfig, QuantizeResult, build_specs, quantize
from crosslayer.quant.qat import QATConfig, quantization_aware_finetune, zero_masks
from crosslayer.quant.sweep import SweepResult, bit_sweep, lowest_within_budget

__all__ = ["CalibrationConfig", "FixedPointSpec", "QATConfig", "QuantConv2d", "QuantLayer", "QuantLinear",
           "QuantizeConfig", "QuantizeResult", "QuantizedTensor", "SweepResult", "bit_sweep", "build_specs",
           "calibrate", "calibrating", "dequantize", "fake_quantize", "iter_quant_layers", "lowest_within_budget",
           "qformat", "qrange", "quantization_aware_finetune", "quantize", "quantize_model",
           "quantize_tensor", "round_to_codes", "scale_for", "weight_codes", "zero_masks"]
