"""Channel-dependency tracer for structured pruning, on a ``torch.fx`` graph.

Removing output channel ``c`` of a conv also removes channel ``c`` of every batch-norm and
element-wise op behind it, input channel ``c`` of the next conv, the ``H*W`` input features of a
linear layer behind a flatten, and channel ``c`` of every layer joined to it by a residual addition.
This module finds those *channel groups* (the idea of DepGraph, Fang et al., CVPR 2023, reduced to
the layers this toolkit uses).

Written here instead of depending on Torch-Pruning because (a) the toolkit then needs no extra
runtime dependency and its result is easy to audit (a list of named producers / norms / consumers
per group), and (b) Torch-Pruning serves as the independent *peer* that benchmarks/_pruning_peers.py
compares against, which only means something if the two are separate implementations.

Anything the tracer does not understand (concatenation, grouped convs, reshapes other than a
flatten from dim 1, unknown modules or functions) *freezes* the groups flowing into it: they are
never pruned. That is conservative but always correct.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from crosslayer.errors import StageError

__all__ = ["ChannelGroup", "trace_channel_groups"]

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardtanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_FUNCS = {torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.hardswish,
               F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
               torch.nn.functional.elu}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach", "relu_"}
_JOIN_FUNCS = {operator.add, operator.iadd, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
_JOIN_METHODS = {"add", "add_", "sub", "mul"}
_FLATTEN_FUNCS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass
class ChannelGroup:
    """Channels that must be removed together.

    ``producers``: modules whose output channels (weight dim 0) form the group; ``norms``:
    ``(batch-norm name, features per channel)``; ``consumers``: ``(module name, features per channel)``
    whose input dim (weight dim 1) reads the group (features per channel > 1 behind a flatten).
    ``frozen`` gives the reason the group may not be pruned, or is empty.
    """

    size: int
    producers: list[str] = field(default_factory=list)
    norms: list[tuple[str, int]] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    frozen: str = ""

    @property
    def key(self) -> str:
        """A stable name: the first producer (model order)."""
        return self.producers[0]

    @property
    def prunable(self) -> bool:
        return not self.frozen and bool(self.producers)


@dataclass(frozen=True)
class _Tag:
    gid: int
    repeat: int


class _Groups:
    """Union-find over group ids."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, size: int, producer: str) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(size=size, producers=[producer]))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def get(self, g: int) -> ChannelGroup:
        return self.groups[self.find(g)]

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        ga.producers += gb.producers
        ga.norms += gb.norms
        ga.consumers += gb.consumers
        ga.frozen = ga.frozen or gb.frozen
        self.parent[rb] = ra

    def freeze(self, g: int, reason: str) -> None:
        grp = self.get(g)
        grp.frozen = grp.frozen or reason

    def roots(self) -> list[ChannelGroup]:
        return [self.groups[i] for i in range(len(self.parent)) if self.find(i) == i]


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _flatten_repeat(node: fx.Node, src: Any) -> int | None:
    """Features per channel when ``node`` flattens ``src`` from dim 1 (channel-major), else None."""
    si, so = _shape(src), _shape(node)
    if si is None or so is None or len(si) < 2 or len(so) != 2 or so[0] != si[0] or so[1] != prod(si[1:]):
        return None
    return prod(si[2:])


def trace_channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """All channel groups of ``model`` (frozen ones included, with the reason), in model order."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on data-dependent control flow
        raise StageError(f"structured pruning needs a torch.fx-traceable model; tracing "
                         f"{type(model).__name__} failed: {type(exc).__name__}: {exc}") from exc
    was_training = model.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input.to(next(model.parameters()).device))
    model.train(was_training)
    modules = dict(gm.named_modules())
    gs = _Groups()
    tags: dict[fx.Node, _Tag | None] = {}
    calls: dict[str, int] = {}
    attr_targets: list[str] = []

    def tag_of(a: Any) -> _Tag | None:
        return tags.get(a) if isinstance(a, fx.Node) else None

    def freeze_inputs(node: fx.Node, reason: str) -> None:
        for a in node.all_input_nodes:
            t = tags.get(a)
            if t is not None:
                gs.freeze(t.gid, reason)

    for node in gm.graph.nodes:
        out: _Tag | None = None
        src = node.args[0] if node.args else None
        t_in = tag_of(src)
        if node.op in ("placeholder", "get_attr"):
            if node.op == "get_attr":
                attr_targets.append(str(node.target))
        elif node.op == "call_module":
            name = str(node.target)
            m = modules[name]
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1 and isinstance(m, nn.Conv2d | nn.Linear | nn.modules.batchnorm._BatchNorm):
                raise StageError(f"layer {name!r} is used more than once in forward(); structured pruning "
                                 "needs every conv / linear / batch-norm layer to be called once")
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                if t_in is not None:
                    gs.get(t_in.gid).consumers.append((name, t_in.repeat))
                out = _Tag(gs.new(m.out_channels, name), 1)
            elif isinstance(m, nn.Linear) and (_shape(src) or ()).__len__() == 2:
                if t_in is not None:
                    gs.get(t_in.gid).consumers.append((name, t_in.repeat))
                out = _Tag(gs.new(m.out_features, name), 1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and t_in is not None:
                gs.get(t_in.gid).norms.append((name, t_in.repeat))
                out = t_in
            elif isinstance(m, _PASS_MODULES):
                out = t_in
            elif isinstance(m, nn.Flatten) and t_in is not None and m.start_dim == 1:
                rep = _flatten_repeat(node, src)
                out = _Tag(t_in.gid, t_in.repeat * rep) if rep is not None else None
                if rep is None:
                    gs.freeze(t_in.gid, f"reshaped by {name}")
            else:
                freeze_inputs(node, f"feeds {type(m).__name__} {name!r}, which the tracer does not handle")
        elif node.op in ("call_function", "call_method"):
            fn, is_m = node.target, node.op == "call_method"
            if _shape(node) is None:  # x.size(0) and friends: no tensor output, no channel effect
                out = None
            elif (fn in _PASS_METHODS) if is_m else (fn in _PASS_FUNCS):
                out = t_in
            elif (fn in _FLATTEN_METHODS) if is_m else (fn in _FLATTEN_FUNCS):
                rep = _flatten_repeat(node, src) if t_in is not None else None
                if t_in is not None and rep is not None:
                    out = _Tag(t_in.gid, t_in.repeat * rep)
                elif t_in is not None and _shape(node) == _shape(src):
                    out = t_in
                else:
                    freeze_inputs(node, f"reshaped by {node.name}")
            elif (fn in _JOIN_METHODS) if is_m else (fn in _JOIN_FUNCS):
                others = [tag_of(a) for a in node.args[1:2]]
                t_b = others[0] if others else None
                b_tensor = len(node.args) > 1 and isinstance(node.args[1], fx.Node) and _shape(node.args[1])
                if t_in is not None and t_b is not None and t_in.repeat == t_b.repeat:
                    gs.union(t_in.gid, t_b.gid)
                    out = _Tag(gs.find(t_in.gid), t_in.repeat)
                elif not b_tensor and t_in is not None:  # tensor op scalar
                    out = t_in
                else:
                    freeze_inputs(node, f"joined with an untracked tensor in {node.name}")
            else:
                freeze_inputs(node, f"feeds {getattr(fn, '__name__', fn)!s} ({node.name}), "
                                    "which the tracer does not handle")
        elif node.op == "output":
            freeze_inputs(node, "model output")
        tags[node] = out

    roots = gs.roots()
    for g in roots:
        names = g.producers + [n for n, _ in g.norms] + [n for n, _ in g.consumers]
        hit = [t for t in attr_targets if any(t.startswith(n + ".") for n in names)]
        if hit:
            g.frozen = g.frozen or f"parameter {hit[0]!r} is read directly in forward()"
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    for g in roots:
        g.producers.sort(key=lambda n: order.get(n, 0))
    return sorted(roots, key=lambda g: order.get(g.producers[0], 0) if g.producers else -1)
