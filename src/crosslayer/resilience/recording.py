"""The recorded clean pass of a fault campaign: the model traced with ``torch.fx`` (quantized layers and the
faulty layers kept as leaves), every value recorded out of place, max-pooling as the maximum of strided slices
(the same values, several times faster for small maps on CPU)."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from crosslayer.quant import QuantLayer

__all__ = ["FastMaxPool", "LeafTracer", "NoInplace", "capture_module", "out_of_place", "supports_fault",
           "window_max"]


class LeafTracer(fx.Tracer):
    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaves or isinstance(m, QuantLayer)
                or super().is_leaf_module(m, module_qualified_name))


def out_of_place(graph: fx.Graph) -> None:
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


class NoInplace:
    """Context manager: modules with an ``inplace`` flag compute out of place while it is active."""

    def __init__(self, model: nn.Module) -> None:
        self.mods = [m for m in model.modules() if getattr(m, "inplace", False) is True]

    def __enter__(self) -> None:
        for m in self.mods:
            m.inplace = False  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        for m in self.mods:
            m.inplace = True  # type: ignore[assignment]


def window_max(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor | None:
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


class FastMaxPool(nn.Module):
    """A MaxPool2d computed by :func:`window_max` where it applies (same values), else by the pool itself."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = window_max(x, self.pool)
        return self.pool(x) if fast is None else fast


def supports_fault(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def capture_module(graph: fx.GraphModule, nodes: list[fx.Node]) -> fx.GraphModule:
    """A module computing ``graph`` and returning the value of every node in ``nodes`` (out of place, with
    :class:`FastMaxPool` for max-pooling)."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(tuple(env[n] for n in nodes))
    out_of_place(g)
    modules: dict[str, Any] = {}
    for n in g.nodes:
        if n.op == "call_module":
            mod = graph.get_submodule(str(n.target))
            modules[str(n.target)] = FastMaxPool(mod) if isinstance(mod, nn.MaxPool2d) else mod
        elif n.op == "get_attr":
            obj: Any = graph
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            modules[str(n.target)] = obj
    return fx.GraphModule(modules, g)
