"""Single-weight faults of a whole campaign evaluated by propagating *sparse differences* through the
network after the faulty layer, instead of re-running it.

A fault in weight ``W[o, ...]`` changes only output channel (or feature) ``o`` of its layer. The model is
traced once with ``torch.fx``; one clean pass per image batch records every intermediate value. For a
group of ``K`` faults of one layer, each value after the faulty layer is then held as

- *clean*: unchanged (read from the clean pass, shared by all faults),
- *sparse*: the clean value plus a difference confined to a contiguous block ``[start_k, start_k + L)``
  of one dimension (a channel of an NCHW tensor, a block of flattened features), one block per fault,
- *dense*: the faulty value itself, for all ``K x B`` fault-image pairs.

Element-wise activations, pooling, BatchNorm (eval), flattening and additions keep a difference sparse
(recomputed only on its block: ``f(clean + d) - f(clean)``); a convolution or linear layer maps a sparse
input to a sparse output computing only the weights that touch the block (a conv fed by one changed
channel costs ``1 / C_in`` of the layer, a linear layer fed by one changed channel block costs
``L / in_features``); any other operation makes the value dense and the rest of the network runs on
the stacked batch, with clean per-image values repeated. The layers before the faulty one run once per
image for the whole campaign. The result is the prediction the faulty model makes, up to float rounding
order (the tests check counts against patching the weight and running the whole model).

This generalises the rank-one hook of :mod:`crosslayer.resilience.batched`; fault-injection tools such
as PyTorchFI (Mahmoud et al., DSN-W 2020) re-run the whole model per fault.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from crosslayer.quant import QuantLayer

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
    """``clean + delta`` where ``delta`` (K, B, ..., L, ...) covers ``[start_k, start_k + L)`` of ``dim``."""

    delta: torch.Tensor
    start: torch.Tensor
    dim: int

    @property
    def length(self) -> int:
        return int(self.delta.shape[self.dim + 1])


@dataclass
class _Dense:
    """The faulty value of all K x B pairs (a tensor with K * B rows, or a non-tensor computed from one)."""

    value: Any


def _block(clean: torch.Tensor, start: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``clean`` (B, ...) restricted to ``[start_k, start_k + length)`` of ``dim`` for each k: (K, B, ..., L, ...)."""
    idx = start[:, None] + torch.arange(length, device=start.device)[None, :]  # (K, L)
    sel = clean.movedim(dim, 0)[idx]  # (K, L, B, ...)
    return sel.movedim(1, dim + 1)


def _densify(s: _Sparse, clean: torch.Tensor) -> torch.Tensor:
    k = s.delta.shape[0]
    full = clean.unsqueeze(0).repeat(k, *([1] * clean.dim()))
    idx = s.start[:, None] + torch.arange(s.length, device=s.start.device)[None, :]  # (K, L)
    shape = [1] * full.dim()
    shape[0], shape[s.dim + 1] = k, s.length
    full.scatter_add_(s.dim + 1, idx.reshape(shape).expand_as(s.delta), s.delta.to(full.dtype))
    return full.reshape(k * clean.shape[0], *clean.shape[1:])


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaves or isinstance(m, QuantLayer)
                or super().is_leaf_module(m, module_qualified_name))


def _is_flatten(n: fx.Node, mod: nn.Module | None) -> bool:
    return ((n.op == "call_function" and n.target is torch.flatten) or isinstance(mod, nn.Flatten)
            or (n.op == "call_method" and n.target in ("view", "reshape", "flatten")))


def _out_of_place(graph: fx.Graph) -> None:
    """Rewrite in-place operations of a captured graph (``inplace=True``, ``relu_``, ``+=``) so that every
    recorded value keeps its own storage."""
    swaps = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul}
    for n in graph.nodes:
        if "inplace" in n.kwargs:
            n.kwargs = {**n.kwargs, "inplace": False}
        if n.op == "call_function" and n.target in swaps:
            n.target = swaps[n.target]
        if n.op == "call_method" and str(n.target).endswith("_") and hasattr(torch.Tensor, str(n.target)[:-1]):
            n.target = str(n.target)[:-1]


class _NoInplace:
    """Context manager: modules with an ``inplace`` flag compute out of place while it is active."""

    def __init__(self, model: nn.Module) -> None:
        self.mods = [m for m in model.modules() if getattr(m, "inplace", False) is True]

    def __enter__(self) -> None:
        for m in self.mods:
            m.inplace = False  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        for m in self.mods:
            m.inplace = True  # type: ignore[assignment]


def _window_max(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor | None:
    """``pool(x)`` as the maximum of its kernel's strided slices (the same values, NaN propagating like
    ``max_pool2d``; several times faster for small maps on CPU), or None for padded / dilated / ceil-mode /
    index-returning pools."""
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size, pool.kernel_size)
    st = pool.stride if isinstance(pool.stride, tuple) else (pool.stride, pool.stride)
    if pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode \
            or pool.return_indices or x.dim() != 4:
        return None
    oh, ow = (x.shape[2] - k[0]) // st[0] + 1, (x.shape[3] - k[1]) // st[1] + 1
    out = None
    for i in range(k[0]):
        for j in range(k[1]):
            sl = x[:, :, i:i + st[0] * (oh - 1) + 1:st[0], j:j + st[1] * (ow - 1) + 1:st[1]]
            out = sl if out is None else torch.maximum(out, sl)
    return out


def _supports_fault(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)


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
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for n in self.nodes:
            env[n] = g.node_copy(n, lambda a: env[a])
        g.output(tuple(env[n] for n in self.nodes))
        _out_of_place(g)
        self.capture = fx.GraphModule(graph, g)
        self.no_inplace = _NoInplace(model)
        self.per_image: list[bool] = []

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

    # ------------------------------------------------------------------ evaluation of one group of faults
    def logits(self, layer: str, clean: list[Any], pos: tuple[torch.Tensor, ...], delta: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, classes) of the K faults ``weight[pos] += delta`` of ``layer`` on the recorded batch."""
        cut = self.cuts[layer]
        k = delta.numel()
        env: dict[fx.Node, Any] = {cut: self._first(layer, clean, pos, delta)}
        start = self.index[cut] + 1
        for n in self.nodes[start:]:
            if not any(isinstance(a, fx.Node) and a in env for a in n.all_input_nodes):
                continue  # clean: read from the clean pass
            env[n] = self._step(n, env, clean, k)
        b = clean[self.index[self.out_node]].shape[0]
        out = env.get(self.out_node)
        base = clean[self.index[self.out_node]]
        if out is None:
            return base.unsqueeze(0).expand(k, *base.shape)
        if isinstance(out, _Sparse):
            return _densify(out, base).reshape(k, b, *base.shape[1:])
        return out.value.reshape(k, b, *base.shape[1:])

    def _first(self, layer: str, clean: list[Any], pos: tuple[torch.Tensor, ...], delta: torch.Tensor) -> _Sparse:
        """The faulty layer's output difference: ``delta`` times one slice of its (quantized) input."""
        node = self.cuts[layer]
        m = self.model.get_submodule(layer)
        x = clean[self.index[node.args[0]]]
        if isinstance(m, QuantLayer):
            x = m.quant_input(x)
        out = clean[self.index[node]]
        if isinstance(m, nn.Linear):
            o, i = pos
            d = x[..., i].movedim(-1, 0) * delta.reshape(-1, *([1] * (x.dim() - 1)))  # (K, B, ...)
            return _Sparse(d.unsqueeze(-1).to(out.dtype), o, out.dim() - 1)
        assert isinstance(m, nn.Conv2d) and not isinstance(m.padding, str)
        o, c, kh, kw = pos
        ph, pw = m.padding
        hout, wout = out.shape[2], out.shape[3]
        xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
        cin = (o // (m.out_channels // m.groups)) * (m.in_channels // m.groups) + c
        rows = kh[:, None] * m.dilation[0] + m.stride[0] * torch.arange(hout, device=x.device)[None, :]
        cols = kw[:, None] * m.dilation[1] + m.stride[1] * torch.arange(wout, device=x.device)[None, :]
        sl = xp[:, cin[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, K, Hout, Wout)
        d = sl.transpose(0, 1) * delta.reshape(-1, 1, 1, 1)
        return _Sparse(d.unsqueeze(2).to(out.dtype), o, 1)

    def _step(self, n: fx.Node, env: dict[fx.Node, Any], clean: list[Any], k: int) -> Any:
        sparse_args = [a for a in n.all_input_nodes if isinstance(env.get(a), _Sparse)]
        dense_tensors = [a for a in n.all_input_nodes
                         if isinstance(env.get(a), _Dense) and isinstance(env[a].value, torch.Tensor)]
        if len(sparse_args) == 1 and not dense_tensors:
            src = sparse_args[0]
            if n.op == "call_method" and n.target == "size" and n.args[0] is src:  # the stacked batch's size
                c = clean[self.index[src]]
                size = torch.Size([k * c.shape[0], *c.shape[1:]])
                return _Dense(size[n.args[1]] if len(n.args) > 1 else size)  # type: ignore[index]
            out = self._sparse_step(n, src, env[src], clean)
            if out is not None:
                return out
        return self._dense_step(n, env, clean, k)

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
            if cout.shape != cin.shape:
                return None
            return self._recompute(n, s, cin, cout, lambda t: t)
        if s.dim == 1 and cin.dim() == 4 and ((mod is not None and isinstance(mod, _POOL_MODULES)) or
                                               (n.op == "call_function" and n.target in _POOL_FUNCTIONS)):
            return self._recompute(n, s, cin, cout, lambda t: t)
        if mod is not None and isinstance(mod, nn.BatchNorm2d) and not mod.training and s.dim == 1:
            return self._batchnorm(mod, s, cin, cout)
        if _is_flatten(n, mod) and s.dim == 1 and cin.dim() >= 3 and cout.dim() == 2 \
                and cout.shape[1] == cin[0].numel():
            inner = int(cin[0, 0].numel())  # a flatten from dim 1: the block becomes L * inner features
            return _Sparse(s.delta.reshape(*s.delta.shape[:2], -1), s.start * inner, 1)
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
                fast = _window_max(x, mod)
                if fast is not None:
                    return fast
            return mod(*args, **n.kwargs)
        if n.op == "call_method":
            return getattr(x, str(n.target))(*n.args[1:], **n.kwargs)
        fn: Callable[..., Any] = n.target  # type: ignore[assignment]
        return fn(*args, **n.kwargs)

    def _recompute(self, n: fx.Node, s: _Sparse, cin: torch.Tensor, cout: torch.Tensor,
                   _unused: Callable[[torch.Tensor], torch.Tensor]) -> _Sparse:
        """``f(clean + d) - f(clean)`` on the block, for operations that act within the block."""
        xin = _block(cin, s.start, s.length, s.dim) + s.delta  # (K, B, ..., L, ...)
        kk, b = xin.shape[:2]
        y = self._call(n, xin.reshape(kk * b, *xin.shape[2:]))
        y = y.reshape(kk, b, *y.shape[1:])
        return _Sparse(y - _block(cout, s.start, s.length, s.dim), s.start, s.dim)

    def _batchnorm(self, bn: nn.BatchNorm2d, s: _Sparse, cin: torch.Tensor, cout: torch.Tensor) -> _Sparse:
        idx = (s.start[:, None] + torch.arange(s.length, device=s.start.device)[None, :]).reshape(-1)
        xin = _block(cin, s.start, s.length, 1) + s.delta  # (K, B, L, H, W)
        kk, b = xin.shape[:2]
        flat = xin.transpose(0, 1).reshape(b, kk * s.length, *xin.shape[3:])

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        y = F.batch_norm(flat, pick(bn.running_mean), pick(bn.running_var), pick(bn.weight), pick(bn.bias),
                         False, 0.0, bn.eps)
        y = y.reshape(b, kk, s.length, *xin.shape[3:]).transpose(0, 1)
        return _Sparse(y - _block(cout, s.start, s.length, 1), s.start, 1)

    @staticmethod
    def _input_delta(m: nn.Module, s: _Sparse, cin: torch.Tensor) -> torch.Tensor:
        if isinstance(m, QuantLayer) and m.act_spec is not None:
            base = _block(cin, s.start, s.length, s.dim)
            return m.quant_input(base + s.delta) - m.quant_input(base)
        return s.delta

    def _conv(self, m: nn.Conv2d, s: _Sparse, cin: torch.Tensor) -> _Sparse | None:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        cg, og = m.in_channels // m.groups, m.out_channels // m.groups
        g = s.start // cg
        if bool(((s.start + s.length - 1) // cg != g).any()):
            return None  # the block spans two groups
        w: torch.Tensor = m.quant_weight() if isinstance(m, QuantLayer) else m.weight
        d = self._input_delta(m, s, cin)  # (K, B, L, H, W)
        kk, b = d.shape[:2]
        rows = (g[:, None] * og + torch.arange(og, device=g.device)[None, :])  # (K, Og)
        chans = (s.start - g * cg)[:, None] + torch.arange(s.length, device=g.device)[None, :]  # (K, L)
        wk = w[rows[:, :, None], chans[:, None, :]]  # (K, Og, L, kh, kw)
        y = F.conv2d(d.transpose(0, 1).reshape(b, kk * s.length, *d.shape[3:]).to(w.dtype),
                     wk.reshape(kk * og, s.length, *w.shape[2:]), None, m.stride, m.padding, m.dilation, kk)
        y = y.reshape(b, kk, og, *y.shape[2:]).transpose(0, 1)
        return _Sparse(y, g * og, 1)

    def _linear(self, m: nn.Linear, s: _Sparse, cin: torch.Tensor) -> _Sparse:
        w: torch.Tensor = m.quant_weight() if isinstance(m, QuantLayer) else m.weight
        d = self._input_delta(m, s, cin).to(w.dtype)  # (K, B, ..., L)
        kk = d.shape[0]
        if s.length == w.shape[1] and not bool(s.start.any()):
            y = d @ w.t()
        else:
            cols = s.start[:, None] + torch.arange(s.length, device=s.start.device)[None, :]  # (K, L)
            wk = w[:, cols].permute(1, 2, 0)  # (K, L, O)
            y = torch.bmm(d.reshape(kk, -1, s.length), wk).reshape(*d.shape[:-1], w.shape[0])
        return _Sparse(y, torch.zeros_like(s.start), d.dim() - 2)

    def _dense_step(self, n: fx.Node, env: dict[fx.Node, Any], clean: list[Any], k: int) -> _Dense:
        def val(a: Any) -> Any:
            if not isinstance(a, fx.Node):
                return a
            v = env.get(a)
            c = clean[self.index[a]]
            if v is None:
                return c.repeat(k, *([1] * (c.dim() - 1))) if self.per_image[self.index[a]] else c
            if isinstance(v, _Sparse):
                env[a] = v = _Dense(_densify(v, c))
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
        gm = fx.GraphModule(model, _Tracer(set(layers)).trace(model))
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
        if len(calls) == 1 and _supports_fault(model.get_submodule(layer)) and len(calls[0].args) == 1 \
                and not calls[0].kwargs and isinstance(calls[0].args[0], fx.Node):
            cuts[layer] = calls[0]
    return DeltaPlan(model, gm, cuts) if cuts else None


def faults_by_position(weight: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                       device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Positions (unravelled flat ``index``) and weight differences ``values - weight.flat[index]``."""
    index = index.to(torch.int64).reshape(-1).cpu()
    values = values.to(torch.float32).reshape(-1).cpu()
    delta = (values - weight.detach().reshape(-1)[index.to(weight.device)].cpu()).to(device)
    pos = tuple(t.to(device) for t in torch.unravel_index(index, tuple(weight.shape)))
    return pos, delta


def run_campaign(plan: DeltaPlan, faults: Mapping[str, tuple[torch.Tensor, torch.Tensor]], images: torch.Tensor,
                 labels: torch.Tensor, counts: dict[str, torch.Tensor], *, budget_elems: int,
                 max_faults_per_pass: int) -> int:
    """Add each fault's correct count over ``images`` to ``counts[layer]`` for the layers in ``plan.cuts``;
    returns the clean correct count."""
    dev = next(plan.model.parameters()).device
    prepared = {n: faults_by_position(plan.model.get_submodule(n).weight, *faults[n], dev)  # type: ignore[arg-type]
                for n in plan.cuts}
    sizes = plan.per_image_sizes(images[:1].to(dev))
    per_image = sum(sizes)
    suffix = {n: sum(sizes[plan.index[c]:]) for n, c in plan.cuts.items()}  # a fault's stacked values, at most
    b_pass = max(1, min(len(images), budget_elems // max(1, per_image)))
    base = 0
    out_i = plan.index[plan.out_node]
    with torch.inference_mode():
        for i in range(0, len(images), b_pass):
            x = images[i:i + b_pass].to(dev)
            y = labels[i:i + b_pass].to(dev)
            with plan.no_inplace:
                clean = list(plan.capture(x))
            base += int((clean[out_i].argmax(-1) == y).sum())
            b = len(y)
            for n in plan.cuts:
                pos, delta = prepared[n]
                k_all = delta.numel()
                k_pass = max(1, min(max_faults_per_pass, k_all, budget_elems // max(1, suffix[n] * b)))
                for s in range(0, k_all, k_pass):
                    sel = slice(s, min(s + k_pass, k_all))
                    logits = plan.logits(n, clean, tuple(t[sel] for t in pos), delta[sel].to(clean[out_i].dtype))
                    counts[n][sel] += (logits.argmax(-1) == y[None, :]).sum(1).cpu()
    return base
