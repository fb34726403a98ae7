"""A model to a packed file and back (the container is :mod:`crosslayer.encode.packfile`).

Packing exports the model to ONNX (:func:`crosslayer.encode.onnx_export.onnx_model`: int8 QDQ for a quantized
model whose weights are at most 8-bit and whose inputs are 8-bit, float otherwise), stores every matrix-product
weight (:func:`crosslayer.prune.prunable_weights`) as a compressed weight record (the exact integer codes of a
quantized layer, float32 bits otherwise), every other state-dict entry (biases, batch-norm statistics,
LayerNorm, position embeddings, calibrated activation ranges) as a raw tensor record, and the graph with every
initializer that one of those records already holds stripped out and referenced by name. The architecture
record (:func:`crosslayer.checkpoint.portable_record`: quantized layer types and every layer's shape, pruned
channel counts included) lets the user's own module be rebuilt from its factory.

Unpacking gives an :class:`~crosslayer.encode.onnx_graph.OnnxModule` (ONNX Runtime with the weights restored),
or, given a freshly built model of the packed model's class, that module with its weights restored
(:func:`crosslayer.checkpoint.rebuild`: layer types from codecs, shapes from an allow-list, a strict load).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from crosslayer.checkpoint import CheckpointError, portable_record, rebuild
from crosslayer.encode.onnx_export import float_twin, onnx_model, quantized_layers
from crosslayer.encode.onnx_graph import OnnxModule, strip_initializers
from crosslayer.encode.packfile import LayerCodes, PackFormatError, read_packed, write_container
from crosslayer.errors import CrossLayerError, StageError
from crosslayer.prune.masks import prunable_weights
from crosslayer.quant.fixed_point import quantize_tensor
from crosslayer.quant.layers import QuantLayer

__all__ = ["pack_model", "unpack_model", "weight_records"]


def weight_records(model: nn.Module) -> dict[str, LayerCodes]:
    """``{state-dict key: record}`` of every matrix-product weight: a quantized layer's codes, else float32 bits."""
    try:
        weights = prunable_weights(model)
    except StageError:
        return {}
    owners = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules()}
    out: dict[str, LayerCodes] = {}
    for key, p in weights.items():
        w = p.detach().cpu().float()
        kind = "conv" if w.dim() == 4 else "linear"
        if w.dim() not in (2, 4):
            continue
        m = owners.get(key)
        if isinstance(m, QuantLayer) and m.weight_spec is not None:
            q = quantize_tensor(w, m.weight_spec)
            out[key] = LayerCodes(key, kind, tuple(w.shape), q.codes.numpy().astype(np.int64).ravel(),
                                  m.weight_spec.bits, m.weight_spec.signed,
                                  q.scale.reshape(-1).numpy().astype(np.float32),
                                  q.zero_point.reshape(-1).numpy().astype(np.float32))
        else:
            out[key] = LayerCodes(key, kind, tuple(w.shape), w.numpy().view(np.uint32).astype(np.int64).ravel(), 32,
                                  False, np.ones(1, np.float32), np.zeros(1, np.float32))
    return out


def _graph(model: nn.Module, example: torch.Tensor) -> tuple[Any, str]:
    """The ONNX graph to store and its kind: int8 QDQ where the model allows it, else float."""
    if quantized_layers(model):
        try:
            return onnx_model(model, example=example, quantized=True), "int8 QDQ"
        except StageError as exc:
            return onnx_model(model, example=example, quantized=False), f"float (no int8 graph: {exc})"
    return onnx_model(model, example=example), "float"


def pack_model(model: nn.Module, example: torch.Tensor, *, conv_index_bits: int = 8,
               fc_index_bits: int = 5) -> tuple[bytes, dict[str, Any]]:
    """The packed bytes of ``model`` (not modified) traced on ``example`` (a batch), and the accounting
    (see :func:`~crosslayer.encode.packfile.write_container`; plus ``graph_kind`` and ``refs``)."""
    model = copy.deepcopy(model).cpu().eval()
    proto, kind = _graph(model, example)
    records = weight_records(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors = {k: v.numpy() for k, v in state.items() if k not in records}
    floats = {k: lc.values() for k, lc in records.items()}

    def match(name: str, arr: np.ndarray) -> tuple[str, str] | None:
        for suffix, kind in (("_quantized", "codes"), ("_quantized_t", "codes_t")):
            lc = records.get(name[:-len(suffix)]) if name.endswith(suffix) else None
            if lc is not None and arr.dtype == np.int8:
                codes = arr.T if kind == "codes_t" else arr
                if np.array_equal(codes.reshape(-1).astype(np.int64), lc.codes):
                    return (kind, lc.name)
        if name in floats and arr.shape == floats[name].shape and np.array_equal(arr, floats[name]):
            return ("weight", name)
        t = tensors.get(name)
        if t is not None and t.dtype == arr.dtype and t.shape == arr.shape and np.array_equal(t, arr):
            return ("tensor", name)
        return None

    refs = strip_initializers(proto, match)
    try:
        record = portable_record(model, float_twin(model))
    except CheckpointError as exc:
        raise StageError(f"the model cannot be packed: {exc}") from exc
    with torch.no_grad():
        classes = int(model(example[:1]).shape[-1])
    meta = {"refs": {k: list(v) for k, v in refs.items()}, "record": record,
            "input": [int(d) for d in example.shape[1:]], "classes": classes, "graph_kind": kind}
    layers = [(lc, conv_index_bits if lc.kind == "conv" else fc_index_bits) for lc in records.values()]
    data, acct = write_container(proto.SerializeToString(), meta, layers, tensors)
    acct["graph_kind"] = kind
    return data, acct


def unpack_model(data: bytes, model: nn.Module | None = None) -> nn.Module:
    """The runnable model of packed bytes: an ONNX Runtime module, or ``model`` (a freshly built instance of the
    packed model's class, e.g. from the user's factory) with the packed weights, layer types and shapes."""
    packed = read_packed(data)
    if model is None:
        try:
            return OnnxModule(packed.graph.SerializeToString()).eval()
        except CrossLayerError as exc:
            raise PackFormatError(str(exc)) from exc
    state = {k: torch.from_numpy(np.array(v)) for k, v in packed.tensors.items()}
    state.update({lc.name: torch.from_numpy(lc.values()) for lc in packed.layers})
    try:
        return rebuild(copy.deepcopy(model).cpu(), packed.meta.get("record", {}), state).eval()
    except CheckpointError as exc:
        raise PackFormatError(f"the packed weights do not fit the given model: {exc}") from exc
