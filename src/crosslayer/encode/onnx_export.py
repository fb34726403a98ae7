"""ONNX export of a sequential model, built node by node from its op list (``encode.graph``).

Float models become Conv / Gemm / Relu / MaxPool / Flatten. Quantized models (``crosslayer.quant`` layers
with ≤ 8-bit weights and 8-bit input activations) become the QDQ form ONNX Runtime fuses into integer
kernels (QLinearConv / QGemm): each layer's input passes QuantizeLinear → DequantizeLinear with the
calibrated scale, weights are int8 initialisers behind DequantizeLinear (per-tensor or per-channel),
biases int32 at scale ``x_scale · w_scale`` (the ONNX Runtime quantization tool's convention).

Building the graph directly (instead of ``torch.onnx.export``) keeps the export independent of the
tracer torch ships and lets an unsupported layer be named in a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from crosslayer.encode.graph import Op, extract_ops, fold_batchnorm
from crosslayer.errors import StageError
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.fixed_point import quantize_tensor, scale_for
from crosslayer.quant.layers import QuantLayer

__all__ = ["onnx_model", "write_onnx"]

OPSET = 17


def _is_int8(m: nn.Module) -> bool:
    return isinstance(m, QuantLayer) and m.weight_spec is not None


def _act_qparams(m: QuantLayer) -> tuple[np.ndarray, np.ndarray]:
    spec = m.act_spec
    if spec is None or not m.act_calibrated:
        raise StageError("int8 ONNX export needs calibrated 8-bit input activations on every quantized layer")
    if spec.bits != 8:
        raise StageError(f"int8 ONNX export needs 8-bit activations, this layer has {spec.bits}")
    scale, zp = scale_for(torch.zeros(1), spec, m.get_buffer("act_lo"), m.get_buffer("act_hi"))
    np_dtype = np.int8 if spec.signed else np.uint8
    return scale.reshape(()).numpy().astype(np.float32), np.asarray(zp.reshape(()).item(), dtype=np_dtype)


def onnx_model(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), *, quantized: bool | None = None,
               name: str = "crosslayer") -> onnx.ModelProto:
    """The ONNX graph of ``model`` (float, or int8 QDQ when its layers are quantized)."""
    model = model.eval().cpu()
    ops, folded = fold_batchnorm(model, extract_ops(model))
    weight_layers = [model.get_submodule(op.name) for op in ops if op.kind in ("conv", "linear")]
    if quantized is None:
        quantized = any(_is_int8(m) for m in weight_layers)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cur = "input"
    for i, op in enumerate(ops):
        out = f"t{i}"
        if op.kind in ("conv", "linear"):
            cur = _weight_layer(op, model.get_submodule(op.name), folded.get(op.name), cur, out, quantized,
                                nodes, inits)
            continue
        if op.kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif op.kind in ("maxpool", "avgpool"):
            k, s, p = op.param("kernel"), op.param("stride"), op.param("padding")
            # PyTorch's average pooling counts the zero padding (count_include_pad), ONNX's does not by default
            attrs: dict[str, Any] = {"kernel_shape": list(k), "strides": list(s), "pads": [p[0], p[1], p[0], p[1]]}
            if op.kind == "avgpool" and any(p):
                attrs["count_include_pad"] = 1
            nodes.append(helper.make_node("MaxPool" if op.kind == "maxpool" else "AveragePool", [cur], [out], **attrs))
        elif op.kind == "flatten":
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
        else:
            raise StageError(f"op {op.kind!r} cannot be exported to ONNX")
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["logits"]))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", None])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="crosslayer")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def _weight_layer(op: Op, m: nn.Module, folded: tuple[torch.Tensor, torch.Tensor] | None, cur: str, out: str,
                  quantized: bool, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> str:
    n = op.name.replace(".", "_")
    w = folded[0] if folded else m.get_parameter("weight").detach()
    b = folded[1] if folded else (m.get_parameter("bias").detach() if getattr(m, "bias", None) is not None
                                  else torch.zeros(w.shape[0]))
    if quantized:
        if not isinstance(m, QuantLayer) or m.weight_spec is None:
            raise StageError(f"layer {op.name!r} is not quantized; int8 export needs every layer quantized")
        if m.weight_spec.bits > 8 or not m.weight_spec.symmetric:
            raise StageError(f"layer {op.name!r}: int8 export needs symmetric weights of at most 8 bits")
        q = quantize_tensor(w, m.weight_spec)
        x_scale, x_zp = _act_qparams(m)
        w_scale = q.scale.reshape(-1).numpy().astype(np.float32)
        per_channel = w_scale.size > 1
        inits += [numpy_helper.from_array(x_scale, f"{n}_xs"), numpy_helper.from_array(x_zp, f"{n}_xz"),
                  numpy_helper.from_array(q.codes.numpy().astype(np.int8), f"{n}_wq"),
                  numpy_helper.from_array(w_scale if per_channel else w_scale.reshape(()), f"{n}_ws"),
                  numpy_helper.from_array(np.zeros(w_scale.shape if per_channel else (), np.int8), f"{n}_wz")]
        b_scale = (x_scale * w_scale).astype(np.float32)
        b_q = np.round(b.numpy() / b_scale).astype(np.int32)
        inits += [numpy_helper.from_array(b_q, f"{n}_bq"),
                  numpy_helper.from_array(b_scale if per_channel else b_scale.reshape(()), f"{n}_bs"),
                  numpy_helper.from_array(np.zeros(b_scale.shape if per_channel else (), np.int32), f"{n}_bz")]
        axis: dict[str, Any] = {"axis": 0} if per_channel else {}
        nodes += [helper.make_node("QuantizeLinear", [cur, f"{n}_xs", f"{n}_xz"], [f"{n}_xq"]),
                  helper.make_node("DequantizeLinear", [f"{n}_xq", f"{n}_xs", f"{n}_xz"], [f"{n}_xd"]),
                  helper.make_node("DequantizeLinear", [f"{n}_wq", f"{n}_ws", f"{n}_wz"], [f"{n}_w"], **axis),
                  helper.make_node("DequantizeLinear", [f"{n}_bq", f"{n}_bs", f"{n}_bz"], [f"{n}_b"], **axis)]
        x_in = f"{n}_xd"
    else:
        inits += [numpy_helper.from_array(w.numpy().astype(np.float32), f"{n}_w"),
                  numpy_helper.from_array(b.numpy().astype(np.float32), f"{n}_b")]
        x_in = cur
    if op.kind == "conv":
        s, p, d = op.param("stride"), op.param("padding"), op.param("dilation")
        nodes.append(helper.make_node("Conv", [x_in, f"{n}_w", f"{n}_b"], [out], strides=list(s),
                                      pads=[p[0], p[1], p[0], p[1]], dilations=list(d)))
    else:
        nodes.append(helper.make_node("Gemm", [x_in, f"{n}_w", f"{n}_b"], [out], transB=1))
    return out


def write_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...] = (1, 28, 28), *,
               quantized: bool | None = None) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically); the checked verb is
    :func:`crosslayer.encode.api.export_onnx`."""
    proto = onnx_model(model, input_shape, quantized=quantized)
    return atomic_write_bytes(path, proto.SerializeToString())
