"""Certified upper bounds on how far a change inside a network can move its logits, used to skip the
evaluation of fault / image pairs whose prediction provably cannot change.

For a value ``v`` from which the rest of the network is a chain ``op_1, ..., op_m, W_out`` (each op
1-input, the last a plain Linear producing the logits), a change ``d`` of ``v`` moves the margin
``y_p - y_j`` of the clean prediction ``p`` by at most ``||w_p - w_j|| * L * ||d||_2`` with ``L`` the
product of the ops' l2 Lipschitz constants. An image whose clean margins all exceed that bound (plus a
rounding tolerance) keeps its prediction: the pair is certified and not evaluated further. This is the
classic Lipschitz-margin certificate (Szegedy et al., ICLR 2014; Tsuzuku, Sato, Sugiyama, NeurIPS 2018)
applied to a fault's difference instead of an adversarial one.

Constants: Linear, its spectral norm (and per-input-column norms when the change is confined to a block
of inputs); Conv2d, the largest singular value over frequencies of the kernel's 2-D DFT, an upper bound
for zero-padded, strided and dilated convolutions (Sedghi, Gupta, Long, ICLR 2019), per input channel
the largest column norm; pooling from window overlap; BatchNorm (eval) its largest ``|gamma| / sigma``;
activations their largest slope. Quantized layers are not Lipschitz (rounding jumps) and end a chain.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from crosslayer.quant import QuantLayer

__all__ = ["ChainGain", "chain_gains", "conv_norms", "margin_radius"]

_SLOPES_MODULES: dict[type, float] = {nn.ReLU: 1.0, nn.ReLU6: 1.0, nn.Hardtanh: 1.0, nn.Identity: 1.0,
                                      nn.Dropout: 1.0, nn.Tanh: 1.0, nn.Sigmoid: 0.25, nn.GELU: 1.13,
                                      nn.SiLU: 1.1, nn.Hardswish: 1.5, nn.Softplus: 1.0}
_SLOPES_FUNCTIONS: dict[Any, float] = {torch.relu: 1.0, F.relu: 1.0, F.relu6: 1.0, F.hardtanh: 1.0,
                                       torch.tanh: 1.0, F.tanh: 1.0, torch.sigmoid: 0.25, F.sigmoid: 0.25,
                                       F.gelu: 1.13, F.silu: 1.1, F.hardswish: 1.5, F.dropout: 1.0}
_SLOPES_METHODS = {"relu": 1.0, "tanh": 1.0, "sigmoid": 0.25}
_SAFETY = 1.0 + 1e-4  # numerical slack on computed norms


@dataclass
class ChainGain:
    """``||change of the logit margin|| <= ||w_p - w_j|| * pre * first(block) * post * ||d||``.

    ``first_columns`` (squared per-input norms of the first weight layer, in the coordinates of the value
    the change sits in) refines ``first`` when the change is confined to a block; None when the chain
    reshapes before that layer or has none."""

    pre: float
    first: float
    first_columns: torch.Tensor | None
    post: float
    others_before: int  # the chain reads other values only from nodes before this position

    def bound(self, norms: torch.Tensor, start: torch.Tensor, length: int, dim: int) -> torch.Tensor:
        first = torch.full_like(norms, self.first)
        if self.first_columns is not None and dim == 1:
            csum = torch.cat([self.first_columns.new_zeros(1), self.first_columns.cumsum(0)])
            block = (csum[(start + length).clamp(max=csum.numel() - 1)] - csum[start]).clamp(min=0).sqrt()
            first = torch.minimum(first, block.to(norms.dtype) * _SAFETY)
        return norms * self.pre * first * self.post


def conv_norms(conv: nn.Conv2d, in_hw: tuple[int, int]) -> tuple[float, torch.Tensor]:
    """Upper bounds on the l2 operator norm of ``conv`` on ``in_hw`` inputs, and per input channel (squared)."""
    w = conv.weight.detach().double()
    o, cg, kh, kw = w.shape
    dh, dw = conv.dilation
    ph, pw = (conv.padding if not isinstance(conv.padding, str) else (kh * dh, kw * dw))
    n_h = in_hw[0] + 2 * ph + (kh - 1) * dh + 1
    n_w = in_hw[1] + 2 * pw + (kw - 1) * dw + 1
    big = w.new_zeros(o, cg, n_h, n_w)
    big[:, :, :(kh - 1) * dh + 1:dh, :(kw - 1) * dw + 1:dw] = w
    spec = torch.fft.fft2(big)  # (O, Cg, Nh, Nw)
    g = conv.groups
    og = o // g
    mats = spec.reshape(g, og, cg, n_h * n_w).permute(0, 3, 1, 2)  # (G, F, Og, Cg)
    full = float(torch.linalg.svdvals(mats).max()) * _SAFETY
    # channel c (of group k) reaches its own group's outputs only: max over frequencies of its column norm^2
    per = (spec.abs() ** 2).reshape(g, og, cg, -1).sum(1).amax(-1).reshape(-1)  # (G * Cg,)
    return full, per.float() * _SAFETY**2


def _pool_gain(mod: nn.Module) -> float | None:
    def pair(v: Any) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    if isinstance(mod, nn.MaxPool2d) and not mod.return_indices:
        k, s, d = pair(mod.kernel_size), pair(mod.stride), pair(mod.dilation)
        span = [(k[i] - 1) * d[i] + 1 for i in range(2)]
        return math.sqrt(math.ceil(span[0] / s[0]) * math.ceil(span[1] / s[1]))
    if isinstance(mod, nn.AvgPool2d) and mod.divisor_override is None:
        k, s = pair(mod.kernel_size), pair(mod.stride)
        n = 1 if (pair(mod.padding) != (0, 0) and not mod.count_include_pad) else k[0] * k[1]  # border divisors
        return math.sqrt(math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1]) / n)
    return None


def _functional_pool(n: fx.Node) -> tuple[str, Any] | None:
    """``F.max_pool2d`` / ``F.avg_pool2d`` given kernel and stride (positionally or by name)."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    given: dict[str, Any] = {**dict(zip(names, n.args, strict=False)), **n.kwargs}
    defaults = {"dilation": 1, "ceil_mode": False, "return_indices": False, "count_include_pad": True,
                "divisor_override": None}
    if any(given.get(k, v) != v for k, v in defaults.items()) or set(given) - set(names) - set(defaults) \
            or "kernel_size" not in given:
        return None  # dilated, index-returning, border-divided or overridden pools: no bound here
    k = given["kernel_size"]
    st = given.get("stride") or k
    if not all(isinstance(v, int) or (isinstance(v, tuple) and all(isinstance(t, int) for t in v)) for v in (k, st)):
        return None
    mod = nn.MaxPool2d(k, st) if n.target is F.max_pool2d else nn.AvgPool2d(k, st)
    gain = _pool_gain(mod)
    return None if gain is None else ("scale", gain)


def _op_gain(n: fx.Node, model: nn.Module, shapes: dict[fx.Node, torch.Size]) -> tuple[str, Any] | None:
    """('scale', c) for a Lipschitz op, ('layer', (full, per-input squared norms)) for a weight layer, None else."""
    if n.op == "call_module":
        mod = model.get_submodule(str(n.target))
        if isinstance(mod, QuantLayer):
            return None
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().double()
            return "layer", (float(torch.linalg.matrix_norm(w, 2)) * _SAFETY, (w**2).sum(0).float() * _SAFETY**2)
        if isinstance(mod, nn.Conv2d) and mod.padding_mode == "zeros":
            src = n.args[0]
            if not isinstance(src, fx.Node) or src not in shapes:
                return None
            return "layer", conv_norms(mod, (shapes[src][2], shapes[src][3]))
        if isinstance(mod, nn.BatchNorm2d) and not mod.training and mod.running_var is not None:
            scale = (mod.weight.detach().abs() if mod.weight is not None else torch.ones_like(mod.running_var))
            return "scale", float((scale / torch.sqrt(mod.running_var + mod.eps)).max()) * _SAFETY
        pool = _pool_gain(mod)
        if pool is not None:
            return "scale", pool
        for cls, slope in _SLOPES_MODULES.items():
            if type(mod) is cls:
                return "scale", slope
        if isinstance(mod, nn.Flatten):
            return "scale", 1.0
        return None
    if n.op == "call_function":
        if n.target in (F.max_pool2d, F.avg_pool2d):
            return _functional_pool(n)
        if n.target in _SLOPES_FUNCTIONS:
            return "scale", _SLOPES_FUNCTIONS[n.target]
        if n.target is torch.flatten:
            return "scale", 1.0
        if n.target in (operator.add, torch.add, operator.sub, torch.sub) and not n.kwargs:
            return "scale", 1.0  # the other operand must be clean (checked by the caller)
        if n.target in (operator.mul, torch.mul) and len(n.args) == 2 and isinstance(n.args[1], (int, float)):
            return "scale", abs(float(n.args[1]))
        return None
    if n.op == "call_method":
        if n.target in _SLOPES_METHODS:
            return "scale", _SLOPES_METHODS[str(n.target)]
        if n.target in ("view", "reshape", "flatten"):
            return "scale", 1.0
    return None


def _meta(n: fx.Node) -> bool:
    """A shape query (``x.size(...)``, ``x.dim()``): reads no values."""
    return n.op == "call_method" and n.target in ("size", "dim")


def _is_reshape(n: fx.Node, model: nn.Module) -> bool:
    return (n.op == "call_method" and n.target in ("view", "reshape", "flatten")) or n.target is torch.flatten \
        or (n.op == "call_module" and isinstance(model.get_submodule(str(n.target)), nn.Flatten))


def chain_gains(model: nn.Module, out_node: fx.Node, index: dict[fx.Node, int],
                shapes: dict[fx.Node, torch.Size]) -> tuple[dict[fx.Node, ChainGain], torch.Tensor | None]:
    """The gain from every node whose remaining network is a certifiable chain ending in a plain Linear that
    produces the output, and that Linear's weight (None: no certification possible).

    Walks back from the output: ``pre`` multiplies the ops between a node and the first weight layer after
    it, ``first`` is that layer, ``post`` everything after it up to the output Linear."""
    if out_node.op != "call_module" or type(model.get_submodule(str(out_node.target))) is not nn.Linear:
        return {}, None
    head: nn.Linear = model.get_submodule(str(out_node.target))  # type: ignore[assignment]
    gains: dict[fx.Node, ChainGain] = {}
    pre, first, cols, post, others = 1.0, 1.0, None, 1.0, -1
    cols_valid = False
    op = out_node
    while True:
        src = op.args[0] if op.args else None
        if not isinstance(src, fx.Node) or src.op in ("placeholder", "get_attr"):
            break
        if [u for u in src.users if not _meta(u)] != [op]:
            break  # the value feeds something else too: not a chain
        if op is not out_node:
            g = _op_gain(op, model, shapes)
            if g is None or sum(1 for a in op.args if a is src) != 1:
                break
            kind, val = g
            if kind == "layer":
                post *= first * pre
                pre, first, cols = 1.0, val[0], val[1]
                # per-input norms index dim 1 of the layer's input: a conv's channels, a 2-D linear input's features
                cols_valid = src in shapes and (len(shapes[src]) == 2 or isinstance(
                    model.get_submodule(str(op.target)), nn.Conv2d))
            else:
                pre *= val
                if _is_reshape(op, model):
                    cols_valid = False
            others = max([others] + [index[a] for a in op.all_input_nodes if a is not src and not _meta(a)])
        gains[src] = ChainGain(pre, first, cols if cols_valid else None, post, others)
        op = src
    return gains, head.weight.detach()


def margin_radius(logits: torch.Tensor, head: torch.Tensor, rel_tol: float = 1e-3) -> torch.Tensor:
    """Per image, the largest ``L * ||d||`` that cannot change the top-1 class:
    ``min_j (y_p - y_j - tol) / ||w_p - w_j||`` (-inf for non-finite logits)."""
    p = logits.argmax(-1)
    tol = rel_tol * (1.0 + logits.abs().amax(-1, keepdim=True))
    marg = logits.gather(-1, p[:, None]) - logits - tol  # (B, C)
    dist = (head[p][:, None, :] - head[None, :, :]).norm(dim=-1)  # (B, C)
    ratio = torch.where(dist > 0, marg / dist.clamp(min=1e-30), torch.where(marg > 0, math.inf, -math.inf))
    ratio = ratio.masked_fill(torch.arange(logits.shape[-1], device=logits.device)[None, :] == p[:, None], math.inf)
    r = ratio.amin(-1)
    return torch.where(torch.isfinite(logits).all(-1), r, torch.full_like(r, -math.inf))
