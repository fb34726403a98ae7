"""A sequential network as a list of plain ops, extracted with ``torch.fx``, so a packed file can rebuild a
runnable model without the Python class that defined it (structurally pruned shapes included).

Supported: Conv2d, Linear (plain or quantized), ReLU, MaxPool2d, AvgPool2d, Flatten, BatchNorm2d (folded
into the preceding conv), Dropout and Identity (dropped). Anything else, or a non-sequential graph
(e.g. a residual addition), raises a ``StageError`` naming the node.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from crosslayer.errors import StageError

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
        return Op("maxpool", params=(("kernel", _pair(m.kernel_size)), ("stride", _pair(m.stride or m.kernel_size)),
                                     ("padding", _pair(m.padding))))
    if isinstance(m, nn.AvgPool2d):
        return Op("avgpool", params=(("kernel", _pair(m.kernel_size)), ("stride", _pair(m.stride or m.kernel_size)),
                                     ("padding", _pair(m.padding))))
    if isinstance(m, nn.Flatten):
        return Op("flatten")
    if isinstance(m, nn.BatchNorm2d):
        return Op("batchnorm", name)
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return None
    raise StageError(f"layer {name!r} of type {type(m).__name__} cannot be packed or exported")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear)) or super().is_leaf_module(m, qualname)


def extract_ops(model: nn.Module) -> list[Op]:
    """The model as a sequential op list (batch-norm still present; see :func:`fold_batchnorm`)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types on untraceable code
        raise StageError(f"cannot trace the model into a graph ({type(exc).__name__}: {exc})") from exc
    ops: list[Op] = []
    prev: fx.Node | None = None
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            if node.op == "placeholder":
                prev = node
            continue
        inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if len(inputs) != 1 or inputs[0] is not prev:
            raise StageError(f"node {node.name!r} ({node.target}) makes the graph non-sequential; "
                             "only sequential networks can be packed or exported this way")
        prev = node
        if node.op == "call_module":
            op = _module_op(str(node.target), model.get_submodule(str(node.target)))
        elif node.target in (torch.relu, nn.functional.relu) or node.target == "relu":
            op = Op("relu")
        elif node.target is torch.flatten or node.target in ("flatten", "view", "reshape"):
            op = Op("flatten")
        elif node.target in (operator.getitem,):
            raise StageError(f"node {node.name!r}: indexing cannot be packed")
        else:
            raise StageError(f"node {node.name!r} ({node.target}) cannot be packed or exported")
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
        w, b = folded.get(out[-1].name, (conv.weight.detach(), conv.bias.detach() if conv.bias is not None
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
