"""Workload extraction: a torch model run on real inputs -> a tuple of :class:`LayerShape`.

The only torch-touching part of the hardware model, and the owner of the project's forward-hook tracing
(:func:`trace_layers`, which the MAC counts of pruning, approximate multipliers, the detector and the crossbar
cost use too). Forward hooks record each conv / linear / pooling
layer's input shape and the measured fraction of non-zero input activations (after the layer's own input
quantization when it is a ``crosslayer.quant`` layer: values that round to zero are zeros the hardware
sees); the weights give the weight density and the non-zeros per output channel. Bit widths come from a
quantized layer's ``weight_spec`` / ``act_spec``; plain float layers use ``float_bits`` (fp32: 32). A pooling
layer holds no weights and moves the activations of the layer it feeds: its width is the input width of the
next conv / linear layer in execution order (an integer pipeline requantizes a layer's output to the next
layer's input precision before pooling, and max pooling commutes with that rounding), ``float_bits`` when that
layer is not quantized or when no layer follows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerKind, LayerShape

__all__ = ["LayerCall", "attention_shapes", "extract_workload", "trace_layers"]

log = logging.getLogger(__name__)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _pair(v: Any, field: str = "value") -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise MappingError(f"{field} = {tuple(v)}: different vertical and horizontal values are not modelled")
        return int(v[0])
    return int(v)


def _bits(spec: Any, float_bits: int) -> int:
    return int(spec.bits) if spec is not None else float_bits


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer during a traced forward pass: its name, the module, the shapes of its first input
    and of its output (batch dimension included)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def weight_per_output(self) -> int:
        """Weights feeding one output value: ``in_channels / groups x kernel`` of a conv, ``in_features`` of a
        linear (of the wrapped layer, for a quantized or approximate wrapper with ``.layer``)."""
        w = getattr(getattr(self.module, "layer", self.module), "weight", None)
        if not isinstance(w, torch.Tensor):
            raise MappingError(f"layer {self.name!r} ({type(self.module).__name__}) has no weight tensor")
        return int(w[0].numel())

    @property
    def outputs_per_sample(self) -> int:
        """Output values per sample (all dimensions but the batch)."""
        n = 1
        for d in self.output_shape[1:]:
            n *= int(d)
        return n

    @property
    def macs_per_sample(self) -> int:
        """Multiply-accumulates of this call per sample: every output value is one dot product."""
        return self.outputs_per_sample * self.weight_per_output


OnCall = Callable[[str, nn.Module, tuple[Any, ...], Any], None]


@torch.no_grad()
def trace_layers(model: nn.Module, inputs: torch.Tensor, select: Callable[[str, nn.Module], bool], *,
                 on_call: OnCall | None = None) -> list[LayerCall]:
    """Run ``inputs`` through ``model`` once (eval mode, no gradients; its mode restored, inputs moved to its
    device) and record every call of the modules ``select(name, module)`` picks, in execution order (a module
    called twice appears twice). ``on_call(name, module, args, output)`` also sees each call as it happens.

    The one forward-hook tracer of the project: MAC counts and layer shapes everywhere come from it."""
    calls: list[LayerCall] = []

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def fn(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            x = args[0] if args else None
            calls.append(LayerCall(name, mod, tuple(x.shape) if isinstance(x, torch.Tensor) else (),
                                   tuple(out.shape) if isinstance(out, torch.Tensor) else ()))
            if on_call is not None:
                on_call(name, mod, args, out)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if select(name, m)]
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model(inputs.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _workload_layer(name: str, mod: nn.Module) -> bool:
    return isinstance(mod, (nn.Conv2d, nn.Linear, nn.MultiheadAttention, *_POOLS))


def _tokens(shape: tuple[int, ...], batch_first: bool) -> int:
    """Tokens per sample of an attention input: (N, T, E) when ``batch_first``, else (T, N, E); (T, E) unbatched."""
    if len(shape) == 2:
        return int(shape[0])
    return int(shape[1] if batch_first else shape[0])


def attention_shapes(name: str, mod: nn.MultiheadAttention, q_tokens: int, kv_tokens: int, *, bits: int,
                     act_density: float = 1.0) -> list[LayerShape]:
    """``nn.MultiheadAttention`` as the four GEMMs it runs per sample (Vaswani et al., NeurIPS 2017): the
    Q / K / V input projections (one GEMM when query, key and value share their width; else three), the scores
    ``Q K^T`` and the context ``softmax(.) V`` per head (grouped 1x1 convolutions, a group per head, whose
    "weights" are the keys / values of the sample), and the output projection. Its internal linears are
    called functionally, so a module hook sees only the block: this is how its MACs reach the cost model.
    Softmax, scaling and masking are not costed (no MACs)."""
    e, h = mod.embed_dim, mod.num_heads
    dh = e // h

    def gemm(part: str, cin: int, cout: int, tokens: int, groups: int = 1, density: float = 1.0) -> LayerShape:
        return LayerShape(name=f"{name}.{part}", kind="linear" if groups == 1 else "conv", in_channels=cin,
                          out_channels=cout, in_h=tokens, groups=groups, weight_bits=bits, act_bits=bits,
                          act_density=density)

    if mod.kdim == e and mod.vdim == e and q_tokens == kv_tokens:
        out = [gemm("in_proj", e, 3 * e, q_tokens, density=act_density)]
    else:
        out = [gemm("q_proj", e, e, q_tokens, density=act_density), gemm("k_proj", mod.kdim, e, kv_tokens),
               gemm("v_proj", mod.vdim, e, kv_tokens)]
    out += [gemm("scores", h * dh, h * kv_tokens, q_tokens, groups=h),
            gemm("context", h * kv_tokens, h * dh, q_tokens, groups=h),
            gemm("out_proj", e, e, q_tokens)]
    return out


def _is_quantized(mod: nn.Module | None) -> bool:
    return mod is not None and getattr(mod, "act_spec", None) is not None


def _pooling_at_next_layer_bits(shapes: list[LayerShape], quantized: set[str]) -> list[LayerShape]:
    """Each pooling layer at the input width of the next quantized conv / linear layer it precedes (see the
    module docstring); pooling before a float layer, or last, keeps its float width."""
    out = list(shapes)
    following: LayerShape | None = None
    for i in range(len(out) - 1, -1, -1):
        s = out[i]
        if s.kind != "pool":
            following = s
        elif following is not None and following.name in quantized:
            out[i] = dataclasses.replace(s, act_bits=following.act_bits, weight_bits=following.act_bits)
    return out


@torch.no_grad()
def extract_workload(model: nn.Module, inputs: torch.Tensor, *, float_bits: int = 32,
                     include_pooling: bool = True) -> tuple[LayerShape, ...]:
    """Run ``inputs`` (a batch of real samples) through ``model`` and describe each layer it executes,
    in execution order, for one inference (``batch = 1``)."""
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise MappingError(f"inputs must be a non-empty batch, got shape {tuple(inputs.shape)}")
    store: dict[str, dict[str, Any]] = {}

    def record(name: str, mod: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        x = args[0]
        q = getattr(mod, "quant_input", None)
        if callable(q) and getattr(mod, "act_spec", None) is not None:
            x = q(x)  # values that round to zero are zeros the hardware sees
        rec = store.setdefault(name, {"nonzero": 0, "total": 0})
        rec["shape"] = tuple(x.shape)
        if isinstance(mod, nn.MultiheadAttention):  # key given by keyword or omitted: self-attention
            key = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else x
            rec["tokens"] = (_tokens(tuple(x.shape), mod.batch_first), _tokens(tuple(key.shape), mod.batch_first))
        rec["nonzero"] += int(torch.count_nonzero(x))
        rec["total"] += x.numel()

    trace_layers(model, inputs, _workload_layer, on_call=record)
    modules = dict(model.named_modules())
    out: list[LayerShape] = []
    for name, rec in store.items():  # dict order = first-call order = execution order
        mod = modules[name]
        act_density = rec["nonzero"] / max(rec["total"], 1)
        shape = rec["shape"]
        lname = name or type(mod).__name__
        if isinstance(mod, nn.MultiheadAttention):
            out.extend(attention_shapes(lname, mod, *rec["tokens"], bits=float_bits, act_density=act_density))
            continue
        if isinstance(mod, _POOLS):
            if not include_pooling:
                continue
            _, c, h, w = shape
            k = _pair(mod.kernel_size, f"{lname}.kernel_size")
            out.append(LayerShape(name=lname, kind="pool", in_channels=c, out_channels=c, in_h=h, in_w=w,
                                  kernel_h=k, kernel_w=k, stride=_pair(mod.stride or k, f"{lname}.stride"),
                                  padding=_pair(mod.padding, f"{lname}.padding"),
                                  groups=c, act_bits=_bits(None, float_bits), weight_bits=_bits(None, float_bits),
                                  act_density=act_density))
            continue
        wspec, aspec = getattr(mod, "weight_spec", None), getattr(mod, "act_spec", None)
        qw = getattr(mod, "quant_weight", None)
        weight = qw() if callable(qw) else mod.weight
        nz = (weight != 0).reshape(weight.shape[0], -1).sum(dim=1)
        common = {"weight_bits": _bits(wspec, float_bits), "act_bits": _bits(aspec, float_bits),
                  "weight_density": float(nz.sum()) / weight.numel(), "act_density": act_density,
                  "filter_nnz": tuple(int(v) for v in nz.tolist())}
        if isinstance(mod, nn.Linear):
            # a Linear applied to tokens ((N, T, ..., F): an MLP or attention projection) is one GEMM with a
            # row per token per sample: a 1x1 convolution on a T x 1 map
            tokens = math.prod(int(d) for d in shape[1:-1])
            out.append(LayerShape(name=lname, kind="linear", in_channels=mod.in_features,
                                  out_channels=mod.out_features, in_h=tokens, **common))
        else:
            assert isinstance(mod, nn.Conv2d)
            if isinstance(mod.padding, str):     # "same" keeps the size (stride 1), "valid" pads nothing
                pad = (int(mod.kernel_size[0]) - 1) // 2 if mod.padding == "same" else 0
            else:
                pad = _pair(mod.padding, f"{lname}.padding")
            if _pair(mod.dilation, f"{lname}.dilation") != 1:
                raise MappingError(f"layer {lname!r}: dilated convolutions are not modelled")
            kind: LayerKind = "dwconv" if mod.groups > 1 and mod.groups == mod.in_channels else "conv"
            _, c, h, w = shape
            kh, kw = (int(k) for k in mod.kernel_size)
            out.append(LayerShape(name=lname, kind=kind, in_channels=c, out_channels=mod.out_channels, in_h=h,
                                  in_w=w, kernel_h=kh, kernel_w=kw,
                                  stride=_pair(mod.stride, f"{lname}.stride"), padding=pad, groups=mod.groups,
                                  **common))
    if not out:
        raise MappingError("the model executed no Conv2d, Linear or pooling layer; nothing to cost")
    out = _pooling_at_next_layer_bits(out, {s.name for s in out if _is_quantized(modules.get(s.name))})
    log.info("workload: %d layers, %d MACs", len(out), sum(s.macs for s in out))
    return tuple(out)
