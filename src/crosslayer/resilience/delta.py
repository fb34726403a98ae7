"""Single-weight faults of a whole campaign evaluated by propagating *sparse differences* through the
network after the faulty layer, instead of re-running it.

A fault in weight ``W[o, ...]`` changes only output channel (or feature) ``o`` of its layer. The model is
traced once with ``torch.fx``; one clean pass per image batch records every intermediate value
(:mod:`crosslayer.resilience.recording`). For a group of ``K`` faults of one layer there is one row per
(fault, image) pair, and each value after the faulty layer is held as

- *clean*: unchanged (read from the clean pass, shared by all pairs),
- *sparse*: the clean value plus a difference confined to a contiguous block ``[start_p, start_p + L)``
  of one dimension (a channel of an NCHW tensor, a block of flattened features), one block per row,
- *dense*: the faulty value itself, one row per pair.

Element-wise activations, pooling, BatchNorm (eval), flattening and additions keep a difference sparse
(recomputed only on its block: ``f(clean + d) - f(clean)``); a convolution or linear layer maps a sparse
input to a sparse output computing only the weights that touch the block (a conv fed by one changed
channel costs ``1 / C_in`` of the layer, a linear layer fed by one changed channel block costs
``L / in_features``); any other operation makes the value dense and the rest of the network runs on the
stacked rows, with clean per-image values gathered. Wherever a sparse value starts a certifiable chain to
the logits, the rows whose prediction provably cannot change are dropped
(:mod:`crosslayer.resilience.lipschitz`). The layers before the faulty one run once per image for the
whole campaign. The result is the prediction the faulty model makes, up to float rounding order (the
tests check counts against patching the weight and running the whole model).

This generalises the rank-one hook of :mod:`crosslayer.resilience.batched`; fault-injection tools such
as PyTorchFI (Mahmoud et al., DSN-W 2020) re-run the whole model per fault.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from crosslayer.quant import QuantLayer
from crosslayer.resilience.lipschitz import ChainGain, chain_gains
from crosslayer.resilience.recording import (
    LeafTracer,
    NoInplace,
    capture_module,
    supports_fault,
    window_max,
)

__all__ = ["DeltaPlan", "delta_plan"]

log = logging.getLogger(__name__)

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish,
                        nn.Hardsigmoid, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout, nn.Mish, nn.Softplus)
_ELEMENTWISE_FUNCTIONS: set[Any] = {torch.relu, F.relu, F.relu6, F.gelu, torch.sigmoid, F.sigmoid, torch.tanh,
                                    F.tanh, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.hardtanh,
                                    F.mish, F.softplus, F.dropout}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "clamp", "clip"}
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS: set[Any] = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
_ADD = {operator.add, torch.add, operator.iadd}
_SUB = {operator.sub, torch.sub}


@dataclass
class _Sparse:
    """``clean[img] + delta`` where ``delta`` (P, ..., L, ...) covers ``[start_p, start_p + L)`` of ``dim``,
    one row per (fault, image) pair."""

    delta: torch.Tensor
    start: torch.Tensor
    dim: int

    @property
    def length(self) -> int:
        return int(self.delta.shape[self.dim])

    def take(self, keep: torch.Tensor) -> _Sparse:
        return _Sparse(self.delta[keep], self.start[keep], self.dim)


@dataclass
class _Dense:
    """The faulty value of every pair (a tensor with P rows, or a non-tensor computed from one)."""

    value: Any

    def take(self, keep: torch.Tensor) -> _Dense:
        return _Dense(self.value[keep]) if isinstance(self.value, torch.Tensor) else self


def _block(clean: torch.Tensor, img: torch.Tensor, start: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Rows ``img`` of ``clean`` restricted to ``[start_p, start_p + length)`` of ``dim``: (P, ..., L, ...)."""
    if length == clean.shape[dim] and not bool(start.any()):
        return clean.index_select(0, img)
    idx = start[:, None] + torch.arange(length, device=start.device)[None, :]  # (P, L)
    return clean.movedim(dim, 1)[img[:, None], idx].movedim(1, dim)


def _densify(s: _Sparse, clean: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    full = clean.index_select(0, img)
    idx = s.start[:, None] + torch.arange(s.length, device=s.start.device)[None, :]  # (P, L)
    shape = [1] * full.dim()
    shape[0], shape[s.dim] = idx.shape[0], s.length
    full.scatter_add_(s.dim, idx.reshape(shape).expand_as(s.delta), s.delta.to(full.dtype))
    return full


def _is_flatten(n: fx.Node, mod: nn.Module | None) -> bool:
    return ((n.op == "call_function" and n.target is torch.flatten) or isinstance(mod, nn.Flatten)
            or (n.op == "call_method" and n.target in ("view", "reshape", "flatten")))


class DeltaPlan:
    """A traced model whose clean pass records every value, and the sparse-difference evaluation of
    faults in each of ``layers`` (see the module docstring)."""

    def __init__(self, model: nn.Module, graph: fx.GraphModule, layers: dict[str, fx.Node]) -> None:
        self.model = model
        self.graph = graph
        self.nodes = [n for n in graph.graph.nodes if n.op != "output"]
        self.index = {n: i for i, n in enumerate(self.nodes)}
        out = next(n for n in graph.graph.nodes if n.op == "output")
        self.out_node: fx.Node = out.args[0]
        self.cuts = layers
        self.capture = capture_module(graph, self.nodes)
        self.no_inplace = NoInplace(model)
        self.per_image: list[bool] = []
        self.gains: dict[fx.Node, ChainGain] = {}
        self.head: torch.Tensor | None = None
        self._img = self._fault = torch.zeros(0, dtype=torch.long)
        self._cut_index = 0

    def probe(self, x: torch.Tensor) -> bool:
        """Find which recorded values are per-image tensors (batch sizes 2 and 3); False if a faulty layer's
        input or output is not one."""
        one = [1] * (x.dim() - 1)
        with torch.inference_mode(), self.no_inplace:
            a, b = self.capture(x[:1].repeat(2, *one)), self.capture(x[:1].repeat(3, *one))
        self.per_image = [isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) and u.dim() > 0
                          and u.shape[0] == 2 and v.shape[0] == 3 for u, v in zip(a, b, strict=True)]
        keep = {}
        for name, node in self.cuts.items():
            arg = node.args[0]
            if isinstance(arg, fx.Node) and self.per_image[self.index[node]] and self.per_image[self.index[arg]]:
                keep[name] = node
        self.cuts = keep
        return bool(keep) and self.per_image[self.index[self.out_node]]

    def per_image_sizes(self, x: torch.Tensor) -> list[int]:
        """Elements per image of every recorded value (0 for values that are not per image)."""
        with torch.inference_mode(), self.no_inplace:
            vals = self.capture(x[:1])
        return [int(v.numel()) if p else 0 for v, p in zip(vals, self.per_image, strict=True)]

    def prepare_certificates(self, x: torch.Tensor) -> None:
        """Lipschitz gains of every node with a certifiable chain to the output (see
        :mod:`crosslayer.resilience.lipschitz`)."""
        with torch.inference_mode(), self.no_inplace:
            vals = self.capture(x[:1])
        shapes = {n: v.shape for n, v, p in zip(self.nodes, vals, self.per_image, strict=True) if p}
        with torch.no_grad():
            self.gains, self.head = chain_gains(self.model, self.out_node, self.index, shapes)

    # ------------------------------------------------------------------ evaluation of one group of faults
    def predictions(self, layer: str, clean: list[Any], pos: tuple[torch.Tensor, ...], delta: torch.Tensor,
                    radius: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-1 predictions under the K faults ``weight[pos] += delta`` of ``layer`` for the (fault, image) pairs
        that were not certified: ``(fault index, image index, prediction)``. Every other pair keeps its clean
        prediction (``radius``: per image, from :func:`margin_radius`; None disables certificates)."""
        cut = self.cuts[layer]
        k = delta.numel()
        b = clean[self.index[cut]].shape[0]
        dev = delta.device
        self._img = torch.arange(b, device=dev).repeat(k)
        self._fault = torch.arange(k, device=dev).repeat_interleave(b)
        env: dict[fx.Node, Any] = {cut: self._first(layer, clean, pos, delta)}
        env = self._certify(cut, env, radius)
        for n in self.nodes[self.index[cut] + 1:]:
            if not self._img.numel():
                break
            if not any(isinstance(a, fx.Node) and a in env for a in n.all_input_nodes):
                continue  # clean: read from the clean pass
            env[n] = self._step(n, env, clean)
            env = self._certify(n, env, radius)
        base = clean[self.index[self.out_node]]
        out = env.get(self.out_node)
        if not self._img.numel() or out is None:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty, empty
        logits = _densify(out, base, self._img) if isinstance(out, _Sparse) else out.value
        return self._fault, self._img, logits.argmax(-1)

    def _certify(self, n: fx.Node, env: dict[fx.Node, Any], radius: torch.Tensor | None) -> dict[fx.Node, Any]:
        """Drop the pairs whose change at ``n`` provably cannot move the prediction."""
        s = env.get(n)
        gain = self.gains.get(n) if radius is not None else None
        if gain is None or not isinstance(s, _Sparse) or gain.others_before >= self._cut_index:
            return env
        norms = s.delta.reshape(s.delta.shape[0], -1).norm(dim=1)
        keep = ~(gain.bound(norms, s.start, s.length, s.dim) < radius[self._img])  # type: ignore[index]
        if bool(keep.all()):
            return env
        self._img, self._fault = self._img[keep], self._fault[keep]
        return {m: v.take(keep) for m, v in env.items()}

    def _first(self, layer: str, clean: list[Any], pos: tuple[torch.Tensor, ...], delta: torch.Tensor) -> _Sparse:
        """The faulty layer's output difference: ``delta`` times one slice of its (quantized) input; rows are
        fault-major (pair ``k * B + b``)."""
        node = self.cuts[layer]
        self._cut_index = self.index[node]
        m = self.model.get_submodule(layer)
        x = clean[self.index[node.args[0]]]
        if isinstance(m, QuantLayer):
            x = m.quant_input(x)
        out = clean[self.index[node]]
        k = delta.numel()
        if isinstance(m, nn.Linear):
            o, i = pos
            d = x[..., i].movedim(-1, 0) * delta.reshape(-1, *([1] * (x.dim() - 1)))  # (K, B, ...)
            d = d.reshape(-1, *d.shape[2:]).unsqueeze(-1)
            return _Sparse(d.to(out.dtype), o.repeat_interleave(x.shape[0]), out.dim() - 1)
        assert isinstance(m, nn.Conv2d) and not isinstance(m.padding, str)
        o, c, kh, kw = pos
        ph, pw = m.padding
        hout, wout = out.shape[2], out.shape[3]
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
        cin = (o // (m.out_channels // m.groups)) * (m.in_channels // m.groups) + c
        (sh, sw), (dh, dw) = m.stride, m.dilation
        slices = []  # the input window each fault's weight multiplies: a strided view per fault
        for c_k, i, j in zip(cin.tolist(), kh.tolist(), kw.tolist(), strict=True):
            slices.append(xp[:, c_k, i * dh:i * dh + sh * (hout - 1) + 1:sh, j * dw:j * dw + sw * (wout - 1) + 1:sw])
        d = (torch.stack(slices) * delta.reshape(-1, 1, 1, 1)).reshape(k * x.shape[0], 1, hout, wout)
        return _Sparse(d.to(out.dtype), o.repeat_interleave(x.shape[0]), 1)

    def _step(self, n: fx.Node, env: dict[fx.Node, Any], clean: list[Any]) -> Any:
        sparse_args = [a for a in n.all_input_nodes if isinstance(env.get(a), _Sparse)]
        dense_tensors = [a for a in n.all_input_nodes
                         if isinstance(env.get(a), _Dense) and isinstance(env[a].value, torch.Tensor)]
        if len(sparse_args) == 1 and not dense_tensors:
            src = sparse_args[0]
            if n.op == "call_method" and n.target == "size" and n.args[0] is src:  # the stacked rows' size
                c = clean[self.index[src]]
                size = torch.Size([self._img.numel(), *c.shape[1:]])
                return _Dense(size[n.args[1]] if len(n.args) > 1 else size)  # type: ignore[index]
            out = self._sparse_step(n, src, env[src], clean)
            if out is not None:
                return out
        return self._dense_step(n, env, clean)

    def _sparse_step(self, n: fx.Node, src: fx.Node, s: _Sparse, clean: list[Any]) -> _Sparse | None:
        """The rules that keep a difference sparse; None when none applies."""
        cin, cout = clean[self.index[src]], clean[self.index[n]]
        if not (isinstance(cout, torch.Tensor) and self.per_image[self.index[n]]):
            return None
        mod = self.model.get_submodule(str(n.target)) if n.op == "call_module" else None
        first = n.args[0] if n.args else None
        if first is not src:
            if n.op == "call_function" and n.target in _ADD and len(n.args) == 2 and n.args[1] is src \
                    and not n.kwargs and cout.shape == cin.shape:
                return s
            return None
        if n.op == "call_function" and n.target in (_ADD | _SUB) and not n.kwargs and cout.shape == cin.shape:
            return s  # clean other operand (or a number): the difference passes unchanged
        if n.op == "call_function" and n.target in (operator.mul, torch.mul) and len(n.args) == 2 \
                and isinstance(n.args[1], (int, float)):
            return _Sparse(s.delta * n.args[1], s.start, s.dim)
        if (mod is not None and isinstance(mod, _ELEMENTWISE_MODULES)) or \
                (n.op == "call_function" and n.target in _ELEMENTWISE_FUNCTIONS) or \
                (n.op == "call_method" and n.target in _ELEMENTWISE_METHODS):
            return self._recompute(n, s, cin, cout) if cout.shape == cin.shape else None
        if s.dim == 1 and cin.dim() == 4 and ((mod is not None and isinstance(mod, _POOL_MODULES)) or
                                               (n.op == "call_function" and n.target in _POOL_FUNCTIONS)):
            return self._recompute(n, s, cin, cout)
        if mod is not None and isinstance(mod, nn.BatchNorm2d) and not mod.training and s.dim == 1:
            return self._batchnorm(mod, s, cin, cout)
        if _is_flatten(n, mod) and s.dim == 1 and cin.dim() >= 3 and cout.dim() == 2 \
                and cout.shape[1] == cin[0].numel():
            inner = int(cin[0, 0].numel())  # a flatten from dim 1: the block becomes L * inner features
            return _Sparse(s.delta.reshape(s.delta.shape[0], -1), s.start * inner, 1)
        if mod is not None and isinstance(mod, nn.Conv2d) and s.dim == 1 and cin.dim() == 4:
            return self._conv(mod, s, cin)
        if mod is not None and isinstance(mod, nn.Linear) and s.dim == cin.dim() - 1:
            return self._linear(mod, s, cin)
        return None

    def _call(self, n: fx.Node, x: torch.Tensor) -> Any:
        """Node ``n`` applied to ``x`` in place of its first argument (other arguments as recorded)."""
        args = (x, *n.args[1:])
        if n.op == "call_module":
            mod = self.model.get_submodule(str(n.target))
            if isinstance(mod, nn.MaxPool2d) and not n.kwargs and len(n.args) == 1:
                fast = window_max(x, mod)
                if fast is not None:
                    return fast
            return mod(*args, **n.kwargs)
        if n.op == "call_method":
            return getattr(x, str(n.target))(*n.args[1:], **n.kwargs)
        fn: Callable[..., Any] = n.target  # type: ignore[assignment]
        return fn(*args, **n.kwargs)

    def _recompute(self, n: fx.Node, s: _Sparse, cin: torch.Tensor, cout: torch.Tensor) -> _Sparse:
        """``f(clean + d) - f(clean)`` on the block, for operations that act within the block."""
        y = self._call(n, _block(cin, self._img, s.start, s.length, s.dim) + s.delta)
        return _Sparse(y - _block(cout, self._img, s.start, s.length, s.dim), s.start, s.dim)

    def _batchnorm(self, bn: nn.BatchNorm2d, s: _Sparse, cin: torch.Tensor, cout: torch.Tensor) -> _Sparse:
        idx = (s.start[:, None] + torch.arange(s.length, device=s.start.device)[None, :]).reshape(-1)
        xin = _block(cin, self._img, s.start, s.length, 1) + s.delta  # (P, L, H, W)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        y = F.batch_norm(xin.reshape(1, -1, *xin.shape[2:]), pick(bn.running_mean), pick(bn.running_var),
                         pick(bn.weight), pick(bn.bias), False, 0.0, bn.eps).reshape(xin.shape)
        return _Sparse(y - _block(cout, self._img, s.start, s.length, 1), s.start, 1)

    def _input_delta(self, m: nn.Module, s: _Sparse, cin: torch.Tensor) -> torch.Tensor:
        if isinstance(m, QuantLayer) and m.act_spec is not None:
            base = _block(cin, self._img, s.start, s.length, s.dim)
            return m.quant_input(base + s.delta) - m.quant_input(base)
        return s.delta

    @staticmethod
    def _by_start(start: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
        """Rows grouped by block start (None: all rows share it)."""
        uniq = torch.unique(start)
        if uniq.numel() == 1:
            return [(int(uniq[0]), None)]
        return [(int(u), torch.nonzero(start == u).reshape(-1)) for u in uniq]

    def _conv(self, m: nn.Conv2d, s: _Sparse, cin: torch.Tensor) -> _Sparse | None:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        cg, og = m.in_channels // m.groups, m.out_channels // m.groups
        g = s.start // cg
        if bool(((s.start + s.length - 1) // cg != g).any()):
            return None  # the block spans two groups
        w: torch.Tensor = m.quant_weight() if isinstance(m, QuantLayer) else m.weight
        d = self._input_delta(m, s, cin).to(w.dtype)  # (P, L, H, W)
        out = None
        for st, rows in self._by_start(s.start):
            gi = st // cg
            wk = w[gi * og:(gi + 1) * og, st - gi * cg:st - gi * cg + s.length]
            y = F.conv2d(d if rows is None else d[rows], wk, None, m.stride, m.padding, m.dilation)
            if rows is None:
                out = y
            else:
                if out is None:
                    out = y.new_empty(d.shape[0], *y.shape[1:])
                out[rows] = y
        assert out is not None
        return _Sparse(out, g * og, 1)

    def _linear(self, m: nn.Linear, s: _Sparse, cin: torch.Tensor) -> _Sparse:
        w: torch.Tensor = m.quant_weight() if isinstance(m, QuantLayer) else m.weight
        d = self._input_delta(m, s, cin).to(w.dtype)  # (P, ..., L)
        out = None
        for st, rows in self._by_start(s.start):
            y = (d if rows is None else d[rows]) @ w[:, st:st + s.length].t()
            if rows is None:
                out = y
            else:
                if out is None:
                    out = y.new_empty(*d.shape[:-1], w.shape[0])
                out[rows] = y
        assert out is not None
        return _Sparse(out, torch.zeros_like(s.start), d.dim() - 1)

    def _dense_step(self, n: fx.Node, env: dict[fx.Node, Any], clean: list[Any]) -> _Dense:
        def val(a: Any) -> Any:
            if not isinstance(a, fx.Node):
                return a
            v = env.get(a)
            c = clean[self.index[a]]
            if v is None:
                return c.index_select(0, self._img) if self.per_image[self.index[a]] else c
            if isinstance(v, _Sparse):
                env[a] = v = _Dense(_densify(v, c, self._img))
            return v.value

        args = fx.node.map_aggregate(n.args, val)
        kwargs = fx.node.map_aggregate(n.kwargs, val)
        if n.op == "call_module":
            return _Dense(self.model.get_submodule(str(n.target))(*args, **kwargs))
        if n.op == "call_method":
            return _Dense(getattr(args[0], str(n.target))(*args[1:], **kwargs))
        fn: Callable[..., Any] = n.target  # type: ignore[assignment]
        return _Dense(fn(*args, **kwargs))


def delta_plan(model: nn.Module, layers: list[str]) -> DeltaPlan | None:
    """A :class:`DeltaPlan` for the faulty ``layers`` that are each called once in a traceable model (None
    when the model cannot be traced); layers it cannot serve are left out of ``plan.cuts``."""
    try:
        gm = fx.GraphModule(model, LeafTracer(set(layers)).trace(model))
    except Exception as exc:  # any tracing failure: the per-layer hook path is the fallback
        log.info("model not traceable with torch.fx (%s); faults evaluated per layer", exc)
        return None
    nodes = list(gm.graph.nodes)
    out = nodes[-1]
    if out.op != "output" or not isinstance(out.args[0], fx.Node):
        return None
    cuts: dict[str, fx.Node] = {}
    for layer in layers:
        calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(calls) == 1 and supports_fault(model.get_submodule(layer)) and len(calls[0].args) == 1 \
                and not calls[0].kwargs and isinstance(calls[0].args[0], fx.Node):
            cuts[layer] = calls[0]
    return DeltaPlan(model, gm, cuts) if cuts else None
