"""ONNX export of any model ``torch.onnx`` can export, float or int8 QDQ.

The graph comes from PyTorch's own exporter (``torch.onnx.export``, the TorchScript-based path, opset 17),
so every layer and functional op it knows is covered: residual adds, concatenation, depthwise / grouped
convolutions, squeeze-and-excitation multiplies, ReLU6 / hard-swish / GELU, LayerNorm,
``nn.MultiheadAttention``, ``x.view(x.size(0), -1)``. Weights stay named after the state dict
(``do_constant_folding=False`` and ``TrainingMode.PRESERVE`` on an eval-mode model: no batch-norm is folded into a
conv by the exporter, ONNX Runtime folds it when it loads the graph; ``keep_initializers_as_inputs`` keeps equal
weights apart, the graph's only input is the image).

A quantized model (``crosslayer.quant`` layers) is exported through its *float twin* (each quantized layer
replaced by a plain Conv2d / Linear holding its dequantized weight) and the graph is then rewritten into the
QDQ form (Jacob et al., CVPR 2018; the ONNX Runtime quantization format): each quantized layer's weight becomes
an int8 initializer ``<layer>.weight_quantized`` (its exact codes) behind ``DequantizeLinear`` (per channel,
axis 0, or per tensor), and the layer's input passes ``QuantizeLinear`` → ``DequantizeLinear`` with the
calibrated activation scale and zero point (uint8 for a non-negative range, int8 otherwise). Biases stay
float32, as in PyTorch's forward, so the int8 graph computes what the quantized PyTorch model computes.
Layers left float (e.g. inside ``nn.MultiheadAttention``) stay float in the graph.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from crosslayer.errors import StageError
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.fixed_point import quantize_tensor
from crosslayer.quant.layers import QuantLayer

__all__ = ["OPSET", "float_twin", "onnx_model", "quantized_layers", "torch_onnx", "write_onnx"]

OPSET = 17


def quantized_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """``{name: layer}`` of the layers whose weights are quantized."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer) and m.weight_spec is not None}


def _plain(m: QuantLayer) -> nn.Module:
    """A plain Conv2d / Linear computing with ``m``'s dequantized weight (its input quantization dropped)."""
    layer: nn.Module
    if isinstance(m, nn.Conv2d):
        geo: dict[str, Any] = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation}
        layer = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, groups=m.groups,  # type: ignore[arg-type]
                          bias=m.bias is not None, padding_mode=m.padding_mode, **geo)
    elif isinstance(m, nn.Linear):
        layer = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    else:  # pragma: no cover - QuantLayer is only mixed into these two
        raise StageError(f"unknown quantized layer type {type(m).__name__}")
    with torch.no_grad():
        layer.weight.copy_(m.quant_weight().detach())
        if m.bias is not None:
            layer.get_parameter("bias").copy_(m.bias.detach())
    return layer.to(m.weight.device)


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every quantized layer replaced by a plain layer holding its dequantized weight."""
    twin = copy.deepcopy(model).eval()
    for name, m in list(quantized_layers(twin).items()):
        parent_name, _, attr = name.rpartition(".")
        parent = twin.get_submodule(parent_name) if parent_name else twin
        setattr(parent, attr, _plain(m))
    return twin


def torch_onnx(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """``torch.onnx.export`` of ``model`` (eval mode, CPU) on ``example``, batch axis dynamic; a model the
    exporter cannot handle is a ``StageError`` naming the exporter's reason."""
    model = model.eval().cpu()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints its IR on failure
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example.cpu(),), buf,  # type: ignore[arg-type]
                              dynamo=False, opset_version=OPSET, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.PRESERVE, keep_initializers_as_inputs=True,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types for ops it does not support
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise StageError(f"torch.onnx cannot export {type(model).__name__}: {reason}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    # keep_initializers_as_inputs stops the exporter merging equal weights into one initializer (each layer keeps
    # its own, named after the state dict); the graph's only input is then the image again.
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    return proto


def _act_qparams(name: str, m: QuantLayer) -> tuple[np.ndarray, np.ndarray]:
    spec = m.act_spec
    if spec is None or not m.act_calibrated:
        raise StageError(f"layer {name!r}: int8 export needs calibrated 8-bit input activations (this layer has "
                         + ("float inputs)" if spec is None else "no calibrated range)"))
    if spec.bits != 8:
        raise StageError(f"layer {name!r}: int8 export needs 8-bit input activations, this layer has {spec.bits}")
    scale, zp = m.act_scale()
    dtype = np.int8 if spec.signed else np.uint8
    return np.asarray(float(scale), np.float32), np.asarray(round(float(zp)), dtype)


def _weight_qparams(name: str, m: QuantLayer) -> tuple[np.ndarray, np.ndarray, bool]:
    spec = m.weight_spec
    assert spec is not None
    q = quantize_tensor(m.weight, spec)  # type: ignore[arg-type]
    if spec.bits > 8 or not spec.signed or bool((q.zero_point != 0).any()):
        raise StageError(f"layer {name!r}: int8 export needs signed symmetric weights of at most 8 bits, this "
                         f"layer has {spec.bits}-bit {'signed' if spec.signed else 'unsigned'} "
                         f"{'symmetric' if spec.symmetric else 'affine'} codes")
    scale = q.scale.detach().reshape(-1).cpu().numpy().astype(np.float32)
    codes = q.codes.detach().cpu().numpy().astype(np.int8)
    return codes, scale, scale.size > 1


def _data_users(graph: onnx.GraphProto, weight: str) -> list[tuple[int, int, int | None]]:
    """``(node index, data input slot, Transpose node index or None)`` of every node computing with initializer
    ``weight``: a Conv / Gemm / MatMul reading it directly, or a MatMul / Gemm reading it through a Transpose."""
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    users: list[tuple[int, int, int | None]] = []
    for i in consumers.get(weight, []):
        node = graph.node[i]
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            users.append((i, 0 if list(node.input).index(weight) != 0 else 1, None))
        elif node.op_type == "Transpose" and len(consumers.get(node.output[0], [])) >= 1:
            for j in consumers[node.output[0]]:
                mm = graph.node[j]
                if mm.op_type in ("MatMul", "Gemm"):
                    users.append((j, 0 if list(mm.input).index(node.output[0]) != 0 else 1, i))
    return users


def _axis(axis: int, per_channel: bool) -> dict[str, Any]:
    return {"axis": axis} if per_channel else {}


def to_qdq(proto: onnx.ModelProto, layers: dict[str, QuantLayer]) -> onnx.ModelProto:
    """Rewrite the float graph of a quantized model's twin into QDQ form (see the module docstring).

    A weight that reaches a MatMul through a Transpose (a linear layer on token tensors) is stored transposed,
    ``<layer>.weight_quantized_t`` with its scales along axis 1, and read without the Transpose: the standard
    QDQ MatMul form, which ONNX Runtime's QDQ fusion handles correctly (a per-channel DequantizeLinear followed by
    a Transpose is not)."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    before: dict[int, list[onnx.NodeProto]] = {}
    rewired: dict[tuple[int, int], str] = {}
    drop: set[int] = set()
    head: list[onnx.NodeProto] = []
    for name, m in layers.items():
        wname = f"{name}.weight"
        if wname not in inits:
            raise StageError(f"layer {name!r}: its weight is not an initializer of the exported graph, so it "
                             "cannot be given int8 codes")
        users = _data_users(graph, wname)
        if not users:
            raise StageError(f"layer {name!r}: no Conv / Gemm / MatMul computes with its weight in the exported graph")
        codes, w_scale, per_channel = _weight_qparams(name, m)
        x_scale, x_zp = _act_qparams(name, m)
        graph.initializer.remove(inits.pop(wname))
        zp = np.zeros(w_scale.shape if per_channel else (), np.int8)
        scale = w_scale if per_channel else w_scale.reshape(())
        graph.initializer.extend([numpy_helper.from_array(scale, f"{wname}_scale"),
                                  numpy_helper.from_array(zp, f"{wname}_zero_point"),
                                  numpy_helper.from_array(x_scale, f"{name}.input_scale"),
                                  numpy_helper.from_array(x_zp, f"{name}.input_zero_point")])
        direct = any(t is None for _, _, t in users)
        transposed = [t for _, _, t in users if t is not None]
        if direct:
            graph.initializer.append(numpy_helper.from_array(codes, f"{wname}_quantized"))
            head.append(helper.make_node("DequantizeLinear", [f"{wname}_quantized", f"{wname}_scale",
                                                              f"{wname}_zero_point"], [wname],
                                         name=f"{name}/DequantizeWeight", **_axis(0, per_channel)))
        if transposed:
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(codes.T), f"{wname}_quantized_t"))
            head.append(helper.make_node("DequantizeLinear", [f"{wname}_quantized_t", f"{wname}_scale",
                                                              f"{wname}_zero_point"], [f"{wname}_t"],
                                         name=f"{name}/DequantizeWeightT", **_axis(1, per_channel)))
        for k, (i, slot, tr) in enumerate(users):
            src = graph.node[i].input[slot]
            q, dq = f"{name}.input_q{k}", f"{name}.input_dq{k}"
            before.setdefault(i, []).extend([
                helper.make_node("QuantizeLinear", [src, f"{name}.input_scale", f"{name}.input_zero_point"], [q],
                                 name=f"{name}/QuantizeInput{k}"),
                helper.make_node("DequantizeLinear", [q, f"{name}.input_scale", f"{name}.input_zero_point"], [dq],
                                 name=f"{name}/DequantizeInput{k}")])
            rewired[(i, slot)] = dq
            if tr is not None:
                rewired[(i, 1 - slot)] = f"{wname}_t"
                drop.add(tr)
    nodes = list(head)
    for i, node in enumerate(graph.node):
        if i in drop:
            continue
        nodes += before.get(i, [])
        new = copy.deepcopy(node)
        for (j, slot), value in rewired.items():
            if j == i:
                new.input[slot] = value
        nodes.append(new)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def onnx_model(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), *, quantized: bool | None = None,
               example: torch.Tensor | None = None) -> onnx.ModelProto:
    """The checked ONNX graph of ``model`` (float, or int8 QDQ when it holds quantized layers, or as
    ``quantized`` says), weights included; ``example`` (else zeros of ``input_shape``) is traced."""
    model = model.eval().cpu()
    layers = quantized_layers(model)
    if quantized is None:
        quantized = bool(layers)
    if quantized and not layers:
        raise StageError("int8 export needs a quantized model (run the quantize step first)")
    x = example.detach().cpu().float()[:2] if example is not None else torch.zeros(2, *input_shape)
    proto = torch_onnx(float_twin(model) if layers else model, x)
    if quantized:
        proto = to_qdq(proto, layers)
    proto.producer_name = "crosslayer"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - a bug in the rewrite, not user input
        raise StageError(f"the exported ONNX graph is invalid: {str(exc)[:300]}") from exc
    return proto


def write_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...] = (1, 28, 28), *,
               quantized: bool | None = None) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically); the checked verb is
    :func:`crosslayer.encode.api.export_onnx`."""
    proto = onnx_model(model, input_shape, quantized=quantized)
    return atomic_write_bytes(path, proto.SerializeToString())
