"""A sequential network as a list of plain ops, extracted with ``torch.fx``, so a packed file can rebuild a
runnable model without the Python class that defined it (structurally pruned shapes included).

Supported: Conv2d, Linear (plain or quantized), ReLU, MaxPool2d, AvgPool2d, Flatten, BatchNorm2d (folded into
the preceding conv; a quantized conv's fake-quantized weight is folded, so the packed file stores that layer
as float weights and keeps its input quantization), Dropout and Identity (dropped), and their functional forms
in ``forward`` (``F.relu`` / ``torch.relu`` / ``x.relu()``, ``F.max_pool2d``, ``F.avg_pool2d``,
``torch.flatten(x, 1)`` / ``x.flatten(1)``, ``x.view(x.size(0), -1)`` / ``x.reshape(...)``). Anything else, or
a non-sequential graph (e.g. a residual addition or a concatenation), raises a ``StageError`` naming the node.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from crosslayer.errors import StageError
from crosslayer.quant.layers import QuantLayer

__all__ = ["Op", "build_sequential", "extract_ops", "fold_batchnorm"]


@dataclass(frozen=True)
class Op:
    kind: str                 # conv, linear, relu, maxpool, avgpool, flatten
    name: str = ""            # the weight layer's name in the source model (conv / linear)
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "params": {k: v for k, v in self.params}}

    @classmethod
    def from_json(cls, d: Any) -> Op:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything but ``{"kind": str, "name": str,
        "params": {str: value}}`` (lists become tuples)."""
        if not isinstance(d, dict) or set(d) - {"kind", "name", "params"}:
            raise ValueError(f"an op must be an object with keys kind / name / params, got {_short(d)}")
        kind, name, params = d.get("kind"), d.get("name", ""), d.get("params", {})
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(params, dict):
            raise ValueError(f"op kind and name must be strings and params an object, got {_short(d)}")
        return cls(kind, name, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pool_op(kind: str, name: str, kernel: Any, stride: Any, padding: Any) -> Op:
    try:
        k = _pair(kernel)
        return Op(kind, params=(("kernel", k), ("stride", _pair(stride or k)), ("padding", _pair(padding))))
    except (TypeError, ValueError, IndexError) as exc:
        raise StageError(f"pooling {name!r}: its kernel, stride and padding must be constant integers") from exc


def _check_pool(name: str, *, dilation: Any = 1, ceil_mode: bool = False, count_include_pad: bool = True,
                divisor_override: Any = None, return_indices: bool = False) -> None:
    if _pair(dilation) != (1, 1) or ceil_mode or not count_include_pad or divisor_override or return_indices:
        raise StageError(f"pooling {name!r}: only plain pooling (no dilation, ceil_mode, divisor override or "
                         "count_include_pad=False) can be packed or exported")


def _module_op(name: str, m: nn.Module) -> Op | None:
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise StageError(f"layer {name!r}: only zero-padded, ungrouped Conv2d can be packed")
        return Op("conv", name, (("stride", _pair(m.stride)), ("padding", _pair(m.padding)),
                                 ("dilation", _pair(m.dilation))))
    if isinstance(m, nn.Linear):
        return Op("linear", name)
    if isinstance(m, nn.ReLU):
        return Op("relu")
    if isinstance(m, nn.MaxPool2d):
        _check_pool(name, dilation=m.dilation, ceil_mode=m.ceil_mode, return_indices=m.return_indices)
        return _pool_op("maxpool", name, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.AvgPool2d):
        _check_pool(name, ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad,
                    divisor_override=m.divisor_override)
        return _pool_op("avgpool", name, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise StageError(f"layer {name!r}: only Flatten(start_dim=1) can be packed or exported")
        return Op("flatten")
    if isinstance(m, nn.BatchNorm2d):
        return Op("batchnorm", name)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return None
    raise StageError(f"layer {name!r} of type {type(m).__name__} cannot be packed or exported")


def _function_op(node: fx.Node) -> Op | None:
    """The op of a functional call in ``forward`` (``call_function`` / ``call_method``)."""
    target, args = node.target, node.args
    kw: dict[str, Any] = dict(node.kwargs)
    if target in (torch.relu, nn.functional.relu) or target == "relu":
        return Op("relu")
    if target is nn.functional.max_pool2d or target is nn.functional.avg_pool2d:
        is_max = target is nn.functional.max_pool2d
        names = ["kernel_size", "stride", "padding"] + (["dilation", "ceil_mode", "return_indices"] if is_max else
                                                        ["ceil_mode", "count_include_pad", "divisor_override"])
        kw.update(zip(names, args[1:], strict=False))
        _check_pool(node.name, **{k: v for k, v in kw.items() if k not in ("kernel_size", "stride", "padding")})
        return _pool_op("maxpool" if is_max else "avgpool", node.name, kw["kernel_size"], kw.get("stride"),
                        kw.get("padding", 0))
    if target is torch.flatten or target == "flatten":
        start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
        if start != 1 or end != -1:
            raise StageError(f"node {node.name!r}: only flattening from dimension 1 (keeping the batch) can be "
                             "packed or exported")
        return Op("flatten")
    if target in ("view", "reshape"):
        return Op("flatten")
    if target in (operator.getitem,):
        raise StageError(f"node {node.name!r}: indexing cannot be packed")
    raise StageError(f"node {node.name!r} ({getattr(target, '__name__', target)}) cannot be packed or exported")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear)) or super().is_leaf_module(m, qualname)


def _is_batch_size(node: fx.Node, of: fx.Node | None) -> bool:
    """``x.size(0)`` (or ``x.shape[0]``) of the current tensor: the batch size a ``view`` keeps."""
    if node.op == "call_method" and node.target == "size":
        return bool(node.args[:1] == (of,) and (node.args[1:] == (0,) or node.kwargs.get("dim") == 0))
    if node.op == "call_function" and node.target is operator.getitem and node.args[1:] == (0,):
        src = node.args[0]
        return bool(isinstance(src, fx.Node) and src.op == "call_function" and src.target is getattr
                    and src.args == (of, "shape"))
    return False


def extract_ops(model: nn.Module) -> list[Op]:
    """The model as a sequential op list (batch-norm still present; see :func:`fold_batchnorm`)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types on untraceable code
        raise StageError(f"cannot trace the model into a graph ({type(exc).__name__}: {exc})") from exc
    ops: list[Op] = []
    prev: fx.Node | None = None
    batch: set[fx.Node] = set()  # x.size(0) / x.shape[0] nodes: read by a view, not part of the data path
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            if node.op == "placeholder":
                prev = node
            continue
        if _is_batch_size(node, prev) or (node.op == "call_function" and node.target is getattr
                                          and node.args == (prev, "shape")):
            batch.add(node)
            continue
        inputs = [a for a in node.all_input_nodes if a.op != "get_attr" and a not in batch]
        if len(inputs) != 1 or inputs[0] is not prev:
            raise StageError(f"node {node.name!r} ({getattr(node.target, '__name__', node.target)}) makes the graph "
                             "non-sequential; only sequential networks can be packed or exported this way")
        prev = node
        op = _module_op(str(node.target), model.get_submodule(str(node.target))) if node.op == "call_module" \
            else _function_op(node)
        if op is not None:
            ops.append(op)
    return ops


def fold_batchnorm(model: nn.Module, ops: list[Op]) -> tuple[list[Op], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Fold each BatchNorm2d into the conv before it: returns the ops without batch-norm and, per folded
    conv, its new (weight, bias)."""
    out: list[Op] = []
    folded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for op in ops:
        if op.kind != "batchnorm":
            out.append(op)
            continue
        if not out or out[-1].kind != "conv":
            raise StageError(f"batch-norm {op.name!r} does not follow a conv and cannot be folded")
        conv = model.get_submodule(out[-1].name)
        bn = model.get_submodule(op.name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        # a quantized conv computes with its fake-quantized weight: fold that one (stored as float afterwards)
        weight = conv.quant_weight() if isinstance(conv, QuantLayer) else conv.weight
        w, b = folded.get(out[-1].name, (weight.detach(), conv.bias.detach() if conv.bias is not None
                                         else torch.zeros(conv.out_channels)))
        var, mean = bn.get_buffer("running_var"), bn.get_buffer("running_mean")
        std = torch.sqrt(var + bn.eps)
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(std)
        folded[out[-1].name] = (w * (gamma / std).reshape(-1, 1, 1, 1),
                                beta + (b - mean) * gamma / std)
    return out, folded


def build_sequential(ops: list[Op], layers: dict[str, nn.Module]) -> nn.Sequential:
    """An ``nn.Sequential`` from ops; ``layers`` maps each conv / linear op name to its built module."""
    mods: list[nn.Module] = []
    for op in ops:
        if op.kind in ("conv", "linear"):
            if op.name not in layers:
                raise StageError(f"no weights for layer {op.name!r}")
            mods.append(layers[op.name])
        elif op.kind == "relu":
            mods.append(nn.ReLU())
        elif op.kind == "maxpool":
            mods.append(nn.MaxPool2d(op.param("kernel"), op.param("stride"), op.param("padding")))
        elif op.kind == "avgpool":
            mods.append(nn.AvgPool2d(op.param("kernel"), op.param("stride"), op.param("padding")))
        elif op.kind == "flatten":
            mods.append(nn.Flatten())
        else:
            raise StageError(f"unknown op kind {op.kind!r}")
    return nn.Sequential(*mods)
