"""Channel-dependency tracer for structured pruning, on a ``torch.fx`` graph.

Removing output channel ``c`` of a conv also removes channel ``c`` of every batch-norm and element-wise op
behind it, input channel ``c`` of the next conv, the ``H*W`` input features of a linear layer behind a
flatten, and channel ``c`` of every layer joined to it by a residual addition or a multiplication (a
squeeze-and-excitation gate). This module finds those *channel groups* (the idea of DepGraph, Fang et al.,
CVPR 2023, reduced to the layers edge models use):

- a depthwise conv (``groups == in_channels``; Howard et al., 2017) has no channels of its own: its filters
  *follow* the group that feeds it, so they are cut together with it (``followers``, with the channel
  multiplier), and so are the batch-norms and consumers behind it;
- a concatenation along the channel axis (``torch.cat``) lays several groups side by side: each member reached
  through it records the groups before it in that axis (``offsets``), so each keeps its own channels;
- the channel axis is followed through pooling, flatten / view / reshape, transpose / permute, reductions
  over other axes (``x.mean((2, 3))``), padding and resizing, and through linear layers on token tensors
  (``(N, T, C)``, channels last).

Written here instead of depending on Torch-Pruning because (a) the toolkit then needs no extra runtime
dependency and its result is easy to audit (a list of named members per group), and (b) Torch-Pruning serves as
the independent *peer* that benchmarks/_pruning_peers.py compares against.

What the tracer cannot prune it *freezes*, with the reason: the model's output (the classifier's classes), a
grouped (not depthwise) conv, ``nn.MultiheadAttention`` (its heads are not pruned: the embedding is split into
heads inside the module), LayerNorm / GroupNorm (their statistics run across the channels), a parameter read
directly in ``forward`` (e.g. a position embedding added to the tokens), and any op it does not know.
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

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
                 nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.LogSigmoid,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d)
_PASS_FUNCS = {torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
               F.hardtanh, F.softplus, F.elu, F.selu, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, F.dropout,
               F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate, F.pad,
               torch.clamp, torch.clip, operator.neg, torch.neg, torch.abs}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach", "float", "to", "type_as",
                 "clamp", "clamp_", "clip", "neg", "abs", "sigmoid_"}
_JOIN_FUNCS = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
               operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
_JOIN_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_PERMUTE = {torch.transpose, torch.permute, "transpose", "permute"}
_CAT_FUNCS = {torch.cat, torch.concat}


@dataclass
class ChannelGroup:
    """Channels that must be removed together.

    ``producers``: modules whose output channels (weight dim 0) form the group; ``followers``: depthwise convs
    ``(name, channel multiplier)`` whose filters (weight dim 0) follow the group; ``norms``: ``(batch-norm name,
    features per channel)``; ``consumers``: ``(module name, features per channel)`` whose input dim (weight
    dim 1) reads the group (features per channel > 1 behind a flatten). ``offsets``: for a member that reads the
    group through a concatenation, the groups before it on that channel axis, as ``(group key, features per
    channel, channels at trace time)``. ``frozen`` gives the reason the group may not be pruned, or is empty.
    """

    size: int
    producers: list[str] = field(default_factory=list)
    norms: list[tuple[str, int]] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    frozen: str = ""
    followers: list[tuple[str, int]] = field(default_factory=list)
    offsets: dict[str, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable name: the first producer (model order)."""
        return self.producers[0]

    @property
    def prunable(self) -> bool:
        return not self.frozen and bool(self.producers)


@dataclass(frozen=True)
class _Tag:
    """The channel axis of a traced tensor: ``segs`` = the groups laid along it, each (group id, repeat)."""

    segs: tuple[tuple[int, int], ...]
    axis: int
    rank: int

    def moved(self, axis: int, rank: int, factor: int = 1) -> _Tag:
        return _Tag(tuple((g, r * factor) for g, r in self.segs), axis, rank)


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
        ga.followers += gb.followers
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


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _dims(v: Any, rank: int) -> list[int] | None:
    if isinstance(v, int):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(d, int) for d in v):
        return None
    return [d % rank for d in v]


class _Tracer:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm, self.modules = gm, dict(gm.named_modules())
        self.gs = _Groups()
        self.tags: dict[fx.Node, _Tag | None] = {}
        self.layouts: list[tuple[str, str, tuple[tuple[int, int], ...]]] = []  # (member, role, segs) via a concat
        self.attr_targets: list[str] = []
        self.calls: dict[str, int] = {}

    def tag(self, a: Any) -> _Tag | None:
        return self.tags.get(a) if isinstance(a, fx.Node) else None

    def freeze_tag(self, t: _Tag | None, reason: str) -> None:
        for g, _ in t.segs if t is not None else ():
            self.gs.freeze(g, reason)

    def freeze_inputs(self, node: fx.Node, reason: str) -> None:
        for a in node.all_input_nodes:
            self.freeze_tag(self.tags.get(a), reason)

    def attach(self, t: _Tag, role: str, name: str, mult: int = 1) -> None:
        """Make ``name`` a member (``role``: norms / followers / consumers) of every group along ``t``."""
        for g, rep in t.segs:
            getattr(self.gs.get(g), role).append((name, mult if role == "followers" else rep * mult))
        if len(t.segs) > 1:
            self.layouts.append((name, role, tuple((g, rep * mult) for g, rep in t.segs)))

    # -- one node ----------------------------------------------------------------------------------
    def module(self, node: fx.Node, t: _Tag | None) -> _Tag | None:
        name = str(node.target)
        m = self.modules[name]
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] > 1 and isinstance(m, nn.Conv2d | nn.Linear | nn.modules.batchnorm._BatchNorm):
            raise StageError(f"layer {name!r} is used more than once in forward(); structured pruning "
                             "needs every conv / linear / batch-norm layer to be called once")
        shape = _shape(node)
        rank = len(shape) if shape else 0
        if isinstance(m, nn.Conv2d):
            if m.groups == 1:
                if t is not None:
                    self.attach(t, "consumers", name)
                return _Tag(((self.gs.new(m.out_channels, name), 1),), 1, rank)
            if m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
                mult = m.out_channels // m.in_channels
                if t is None:
                    return None
                if any(rep != 1 for _, rep in t.segs):
                    self.freeze_tag(t, f"feeds depthwise conv {name!r} through a reshape")
                    return None
                self.attach(t, "followers", name, mult)
                return t.moved(1, rank, mult)
            why = f"grouped conv {name!r} (groups={m.groups}): its channel groups cannot shrink independently"
            self.freeze_tag(t, f"feeds {why}")
            gid = self.gs.new(m.out_channels, name)
            self.gs.freeze(gid, f"produced by {why}")
            return _Tag(((gid, 1),), 1, rank)
        if isinstance(m, nn.Linear):
            if t is not None:
                if t.axis != t.rank - 1:
                    self.freeze_tag(t, f"feeds linear layer {name!r} along another axis than its channels")
                else:
                    self.attach(t, "consumers", name)
            return _Tag(((self.gs.new(m.out_features, name), 1),), rank - 1, rank)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if t is not None and t.axis == 1:
                self.attach(t, "norms", name)
                return t
            self.freeze_tag(t, f"normalised by {name!r} along another axis")
            return None
        if isinstance(m, _PASS_MODULES):
            return t
        if isinstance(m, nn.Flatten):
            return self.reshape(node, t)
        reason = {nn.MultiheadAttention: "feeds nn.MultiheadAttention {n!r}: attention heads are not pruned",
                  nn.LayerNorm: "normalised by LayerNorm {n!r}, whose statistics run across the channels",
                  nn.GroupNorm: "normalised by GroupNorm {n!r}, whose groups run across the channels"}
        why = next((r for cls, r in reason.items() if isinstance(m, cls)),
                   "feeds {c} {n!r}, which the tracer does not handle")
        self.freeze_inputs(node, why.format(n=name, c=type(m).__name__))
        return None

    def reshape(self, node: fx.Node, t: _Tag | None) -> _Tag | None:
        src = node.args[0] if node.args else None
        si, so = _shape(src), _shape(node)
        if t is None or si is None or so is None:
            return None
        a = t.axis
        if len(so) > a and so[:a + 1] == si[:a + 1]:
            return t.moved(a, len(so))
        if len(so) == a + 1 and so[:a] == si[:a] and so[a] == prod(si[a:]):
            return t.moved(a, len(so), prod(si[a + 1:]))
        self.freeze_tag(t, f"reshaped by {node.name}")
        return None

    def join(self, node: fx.Node, t: _Tag | None) -> _Tag | None:
        b = _arg(node, 1, "other")
        tb = self.tag(b)
        so = _shape(node)
        rank = len(so) if so else 0
        if t is not None and tb is not None:
            if (t.axis - t.rank != tb.axis - tb.rank or len(t.segs) != len(tb.segs)
                    or any(ra != rb for (_, ra), (_, rb) in zip(t.segs, tb.segs, strict=True))):
                self.freeze_tag(t, f"joined with differently laid out channels in {node.name}")
                self.freeze_tag(tb, f"joined with differently laid out channels in {node.name}")
                return None
            for (ga, _), (gb, _) in zip(t.segs, tb.segs, strict=True):
                self.gs.union(ga, gb)
            return t.moved(t.axis + rank - t.rank, rank)
        tagged, other = (t, b) if t is not None else (tb, node.args[0] if node.args else None)
        if tagged is None:
            return None
        so_other = _shape(other)
        if not isinstance(other, fx.Node) or so_other is None:
            return tagged.moved(tagged.axis + rank - tagged.rank, rank)  # tensor op scalar
        i = len(so_other) - (tagged.rank - tagged.axis)
        if i < 0 or so_other[i] == 1:  # broadcast along the channels: they stay independent
            return tagged.moved(tagged.axis + rank - tagged.rank, rank)
        what = (f"parameter {other.target!r}, read directly in forward()," if other.op == "get_attr"
                else "an untracked tensor")
        self.freeze_tag(tagged, f"joined with {what} in {node.name}")
        return None

    def cat(self, node: fx.Node) -> _Tag | None:
        parts = _arg(node, 0, "tensors", [])
        parts = list(parts) if isinstance(parts, list | tuple) else []
        tags = [self.tag(p) for p in parts]
        so = _shape(node)
        if not so or not tags:
            return None
        dim = _arg(node, 1, "dim", 0) % len(so)
        if any(t is None for t in tags):
            for t in tags:
                self.freeze_tag(t, f"concatenated with an untracked tensor in {node.name}")
            return None
        ts = [t for t in tags if t is not None]
        if all(t.axis == dim for t in ts):
            return _Tag(tuple(s for t in ts for s in t.segs), dim, len(so))
        if all(t.segs == ts[0].segs and t.axis == ts[0].axis for t in ts):
            return ts[0]
        for t in ts:
            self.freeze_tag(t, f"concatenated along another axis than its channels in {node.name}")
        return None

    def function(self, node: fx.Node, t: _Tag | None) -> _Tag | None:
        fn, is_m = node.target, node.op == "call_method"
        so = _shape(node)
        if so is None:  # x.size(0) and friends: no tensor output, no channel effect
            return None
        if (fn in _PASS_METHODS) if is_m else (fn in _PASS_FUNCS):
            src = _shape(node.args[0]) if node.args else None
            if t is not None and (src is None or len(src) != len(so) or so[t.axis] != src[t.axis]):
                self.freeze_tag(t, f"resized along its channels by {node.name}")
                return None
            return t
        if (fn in _RESHAPE_METHODS) if is_m else (fn in _RESHAPE_FUNCS):
            return self.reshape(node, t)
        if (fn in _JOIN_METHODS) if is_m else (fn in _JOIN_FUNCS):
            return self.join(node, t)
        if not is_m and fn in _CAT_FUNCS:
            return self.cat(node)
        if fn in _PERMUTE and t is not None:
            rank = t.rank
            if fn in (torch.transpose, "transpose"):
                d0, d1 = (_dims(_arg(node, i, k), rank) for i, k in ((1, "dim0"), (2, "dim1")))
                perm = list(range(rank))
                if d0 and d1:
                    perm[d0[0]], perm[d1[0]] = perm[d1[0]], perm[d0[0]]
            else:
                rest = node.args[1:]
                perm = _dims(list(rest[0]) if len(rest) == 1 and isinstance(rest[0], list | tuple) else list(rest),
                             rank) or []
            if sorted(perm) == list(range(rank)):
                return t.moved(perm.index(t.axis), rank)
        if ((fn in _REDUCE_METHODS) if is_m else (fn in _REDUCE_FUNCS)) and t is not None:
            dims = _dims(_arg(node, 1, "dim"), t.rank)
            if dims is not None and t.axis not in dims:
                keep = len(so) == t.rank
                return t.moved(t.axis if keep else t.axis - sum(d < t.axis for d in dims), len(so))
        if fn is operator.getitem and t is not None:
            src = _shape(node.args[0])
            if src is not None and len(src) == len(so) and so[:t.axis + 1] == src[:t.axis + 1]:
                return t
        self.freeze_inputs(node, f"feeds {getattr(fn, '__name__', fn)!s} ({node.name}), "
                                 "which the tracer does not handle")
        return None

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            out: _Tag | None = None
            t_in = self.tag(node.args[0]) if node.args else None
            if node.op == "get_attr":
                self.attr_targets.append(str(node.target))
            elif node.op == "call_module":
                out = self.module(node, t_in)
            elif node.op in ("call_function", "call_method"):
                out = self.function(node, t_in)
            elif node.op == "output":
                self.freeze_inputs(node, "model output (its channels are the classes)")
            self.tags[node] = out


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
    tr = _Tracer(gm)
    tr.run()
    gs = tr.gs
    roots = gs.roots()
    for g in roots:
        names = g.producers + [n for n, _ in g.followers + g.norms + g.consumers]
        hit = [t for t in tr.attr_targets if any(t.startswith(n + ".") for n in names)]
        if hit:
            g.frozen = g.frozen or f"parameter {hit[0]!r} is read directly in forward()"
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    for g in roots:
        g.producers.sort(key=lambda n: order.get(n, 0))
    for name, _role, segs in tr.layouts:
        ids = [gs.find(gid) for gid, _ in segs]
        for i, (gid, _) in enumerate(segs):
            grp = gs.get(gid)
            if ids.count(ids[i]) > 1:
                grp.frozen = grp.frozen or f"appears twice along the channels that {name!r} reads"
                continue
            grp.offsets[name] = tuple((gs.get(h).key, rep, gs.get(h).size) for h, rep in segs[:i])
    return sorted(roots, key=lambda g: order.get(g.producers[0], 0) if g.producers else -1)
