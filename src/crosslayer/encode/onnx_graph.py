"""The graph a packed file carries: an ONNX graph with its large initializers stripped out (they live in the
file's compressed weight records and raw tensor records and are referenced by name), parsed back as data.

A graph read from a file is hostile input: it is parsed with ``onnx.load_from_string`` (protobuf, no code),
size-bounded, refused if any tensor points to external data, if it uses an operator domain other than the
standard one (custom ops, local functions), or if it is not valid ONNX once its initializers are restored
(``onnx.checker.check_model``). Only then is it handed to ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from crosslayer.errors import CrossLayerError

__all__ = ["MAX_GRAPH_BYTES", "MAX_NODES", "OnnxModule", "restore_initializers", "strip_initializers",
           "validate_graph"]

MAX_GRAPH_BYTES = 16 << 20
MAX_NODES = 1 << 16
STANDARD_DOMAINS = ("", "ai.onnx")


class GraphError(CrossLayerError):
    """An embedded ONNX graph that is malformed or unsafe to load."""


Ref = tuple[str, str]  # (source kind: weight | codes | tensor, source name)


def strip_initializers(proto: onnx.ModelProto, match: Callable[[str, np.ndarray], Ref | None]) -> dict[str, Ref]:
    """Remove, in place, every initializer that ``match(name, array)`` maps to a source the file stores anyway;
    returns ``{initializer name: (kind, source)}``. Unmatched initializers (scales, small constants) stay."""
    refs: dict[str, Ref] = {}
    keep = []
    for init in proto.graph.initializer:
        ref = match(init.name, numpy_helper.to_array(init))
        if ref is None:
            keep.append(init)
        else:
            refs[init.name] = ref
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return refs


def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, those of sub-graphs (If / Loop / Scan bodies) included."""
    out: list[onnx.NodeProto] = []
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            out.append(node)
            for attr in node.attribute:
                stack += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    return out


def _external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0


def validate_graph(raw: bytes) -> onnx.ModelProto:
    """Parse an embedded graph and refuse anything unsafe (see the module docstring); ``GraphError`` on a defect."""
    if len(raw) > MAX_GRAPH_BYTES:
        raise GraphError(f"embedded graph of {len(raw)} bytes exceeds {MAX_GRAPH_BYTES}")
    try:
        proto = onnx.load_from_string(raw)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise GraphError(f"embedded graph is not a valid ONNX protobuf: {type(exc).__name__}") from exc
    if not proto.HasField("graph"):
        raise GraphError("embedded graph holds no graph")
    nodes = _nodes(proto.graph)
    if len(nodes) > MAX_NODES:
        raise GraphError(f"embedded graph has {len(nodes)} nodes, more than {MAX_NODES}")
    domains = {o.domain for o in proto.opset_import} | {n.domain for n in nodes}
    bad = sorted(d for d in domains if d not in STANDARD_DOMAINS)
    if bad or len(proto.functions):
        raise GraphError(f"embedded graph uses operator domain(s) {bad or ['(local functions)']}; only the standard "
                         "ONNX operators are accepted")
    tensors = list(proto.graph.initializer) + [a.t for n in nodes for a in n.attribute if a.HasField("t")]
    if any(_external(t) for t in tensors) or len(proto.graph.sparse_initializer):
        raise GraphError("embedded graph refers to external or sparse tensor data; only inline data is accepted")
    if len(proto.graph.input) != 1 or len(proto.graph.output) < 1:
        raise GraphError(f"embedded graph has {len(proto.graph.input)} inputs and {len(proto.graph.output)} "
                         "outputs; one image input and at least one output are needed")
    return proto


def restore_initializers(proto: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """Put the stripped initializers back and check the complete model (``GraphError`` if invalid)."""
    have = {t.name for t in proto.graph.initializer}
    clash = sorted(set(arrays) & have)
    if clash:
        raise GraphError(f"initializer(s) {clash[:3]} are both stored in the graph and referenced")
    proto.graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a), n) for n, a in arrays.items())
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # ValidationError, or a protobuf error on a malformed field
        raise GraphError(f"embedded graph is not valid ONNX: {str(exc).splitlines()[0][:300]}") from exc
    return proto


class OnnxModule(nn.Module):
    """A model run by ONNX Runtime on the CPU, usable wherever a PyTorch classifier is (``evaluate``,
    ``predict``): ``forward`` takes a float image batch and returns the first output as a tensor.
    ``onnx_bytes`` is the complete ONNX model (weights included), e.g. to save with ``Path.write_bytes``.

    ``exact`` (default) runs a QDQ graph as written (``session.disable_quant_qdq``: dequantize, then float
    ops), which computes what the quantized PyTorch model computes. With ``exact=False`` ONNX Runtime fuses the
    QDQ pattern into its integer kernels, which on x86 CPUs without VNNI multiply u8 x s8 with 16-bit saturating
    pair sums (VPMADDUBSW; the ONNX Runtime quantization guide warns of it) and can deviate, markedly so for
    signed activations such as LayerNorm outputs."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None, *, exact: bool = True) -> None:
        super().__init__()
        import onnxruntime as ort

        self.onnx_bytes = onnx_bytes
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if exact:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session: Any = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for a graph it cannot run
            raise GraphError(f"ONNX Runtime cannot load the graph: {str(exc).splitlines()[0][:300]}") from exc
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of a float32 batch, as NumPy."""
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return torch.from_numpy(self.run(x.detach().cpu().numpy()))
        except Exception as exc:  # a shape the graph does not take
            raise GraphError(f"ONNX Runtime cannot run the graph on input {tuple(x.shape)}: "
                             f"{str(exc).splitlines()[0][:300]}") from exc
