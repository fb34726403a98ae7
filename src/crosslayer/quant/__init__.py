"""Fixed-point quantization: pure functions, quantized layers, calibration."""

from crosslayer.quant.fixed_point import (FixedPointSpec, QuantizedTensor, dequantize, fake_quantize, qrange,
                                          quantize, quantize_tensor, scale_for)
from crosslayer.quant.layers import (QuantConv2d, QuantLayer, QuantLinear, calibrating, iter_quant_layers,
                                     quantize_model, weight_codes)

__all__ = ["FixedPointSpec", "QuantConv2d", "QuantLayer", "QuantLinear", "QuantizedTensor", "calibrating",
           "dequantize", "fake_quantize", "iter_quant_layers", "qrange", "quantize", "quantize_model",
           "quantize_tensor", "scale_for", "weight_codes"]
