"""Structured filter / channel pruning that physically removes channels.

Importance of a channel is the L1 (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)
or L2 norm of its producers' weights (the filter of a conv, the row of a linear layer), summed over
the producers of a residual group. The lowest-importance channels of every prunable group
(:mod:`crosslayer.prune.tracer`) are cut from the producers, batch-norms and consumers, so the model
gets smaller and faster and stays a plain ``nn.Module`` of the same class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from crosslayer.config import check_range
from crosslayer.errors import ConfigError, StageError
from crosslayer.hw.workload import trace_layers
from crosslayer.prune.tracer import ChannelGroup, trace_channel_groups

__all__ = ["Importance", "StructuredResult", "channel_importance", "count_macs", "kept_channels",
           "prunable_groups", "prune_groups", "prune_structured"]

Importance = Literal["l1", "l2"]


def prunable_groups(model: nn.Module, example_input: torch.Tensor,
                    layers: Sequence[str] | None = None) -> list[ChannelGroup]:
    """The prunable channel groups; ``layers`` keeps only groups produced by those module names."""
    groups = trace_channel_groups(model, example_input)
    ok = [g for g in groups if g.prunable]
    if layers:
        producers = {p for g in groups for p in g.producers}
        unknown = [n for n in layers if n not in producers]
        if unknown:
            raise ConfigError(f"layer(s) {', '.join(map(repr, unknown))} do not produce channels in "
                              f"{type(model).__name__}; allowed: {', '.join(sorted(producers))}")
        ok = [g for g in ok if set(g.producers) & set(layers)]
    if not ok:
        raise StageError(f"{type(model).__name__} has no prunable channel group"
                         + (f" among {', '.join(layers)}" if layers else "")
                         + "; frozen: " + "; ".join(f"{g.key if g.producers else '?'} ({g.frozen})" for g in groups))
    return ok


def channel_importance(model: nn.Module, group: ChannelGroup, importance: Importance = "l1") -> torch.Tensor:
    """Per-channel score of ``group``: the L1 or L2 norm of each producer's output slice, summed."""
    if importance not in ("l1", "l2"):
        raise ConfigError(f"importance = {importance!r} is not allowed; choose 'l1' or 'l2'")
    mods = dict(model.named_modules())
    score = torch.zeros(group.size)
    for name in group.producers:
        weight = mods[name].weight
        assert isinstance(weight, torch.Tensor)
        w = weight.detach().flatten(1).float().cpu()
        score += w.abs().sum(1) if importance == "l1" else w.pow(2).sum(1).sqrt()
    return score


def _expand(keep: torch.Tensor, repeat: int) -> torch.Tensor:
    return (keep[:, None] * repeat + torch.arange(repeat)[None, :]).flatten()


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        return
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(module, name, value.contiguous())


def _index(group: ChannelGroup, member: str, keep: torch.Tensor, repeat: int, total: int,
           sizes: Mapping[str, int]) -> torch.Tensor:
    """Indices kept along a member's channel dimension of length ``total``: the group's kept channels at the
    group's offset there (after the groups a concatenation put before it), every other entry unchanged."""
    offset = sum(sizes.get(key, size) * rep for key, rep, size in group.offsets.get(member, ()))
    end = offset + group.size * repeat
    return torch.cat([torch.arange(offset), offset + _expand(keep, repeat), torch.arange(end, total)])


@torch.no_grad()
def _cut(model: nn.Module, group: ChannelGroup, keep: torch.Tensor, sizes: Mapping[str, int]) -> None:
    mods = dict(model.named_modules())
    for name in group.producers:
        m = mods[name]
        k = keep.to(m.weight.device)
        _set(m, "weight", m.weight[k])
        _set(m, "bias", m.bias[k] if m.bias is not None else None)
        if isinstance(m, nn.Conv2d):
            m.out_channels = len(keep)
        else:
            m.out_features = len(keep)
    for name, mult in group.followers:  # depthwise: filters follow their input channels
        m = mods[name]
        assert isinstance(m, nn.Conv2d)
        k = _index(group, name, keep, mult, m.out_channels, sizes).to(m.weight.device)
        _set(m, "weight", m.weight[k])
        _set(m, "bias", m.bias[k] if m.bias is not None else None)
        m.out_channels = len(k)
        m.in_channels = m.groups = len(k) // mult
    for name, rep in group.norms:
        m = mods[name]
        total = m.running_mean.numel() if m.running_mean is not None else m.weight.numel()
        k = _index(group, name, keep, rep, total, sizes).to(m.weight.device if m.weight is not None else "cpu")
        for attr in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, attr)
            _set(m, attr, t[k] if t is not None else None)
        m.num_features = len(k)
    for name, rep in group.consumers:
        m = mods[name]
        k = _index(group, name, keep, rep, m.weight.shape[1], sizes).to(m.weight.device)
        _set(m, "weight", m.weight[:, k])
        if isinstance(m, nn.Conv2d):
            m.in_channels = len(k)
        else:
            m.in_features = len(k)
    group.size = len(keep)


def prune_groups(model: nn.Module, groups: Sequence[ChannelGroup], keep_counts: Mapping[str, int],
                 importance: Importance = "l1") -> dict[str, torch.Tensor]:
    """Keep the ``keep_counts[group.key]`` most important channels of each group (in place).

    Returns the kept channel indices per group key (ascending). Groups missing from ``keep_counts``
    are left alone; a count must lie in ``[1, group.size]``.
    """
    kept: dict[str, torch.Tensor] = {}
    sizes = {g.key: g.size for g in groups if g.producers}
    for g in groups:
        if g.key not in keep_counts:
            continue
        n = keep_counts[g.key]
        check_range(f"channels kept in {g.key}", n, 1, g.size)
        if n == g.size:
            continue
        score = channel_importance(model, g, importance)
        keep = torch.sort(torch.sort(score, descending=True, stable=True).indices[:n]).values
        _cut(model, g, keep, sizes)
        sizes[g.key] = g.size
        kept[g.key] = keep
    return kept


@dataclass(frozen=True)
class StructuredResult:
    """What one structured-pruning call removed: channels per group, parameters and MACs before / after."""

    channels_before: dict[str, int]
    channels_after: dict[str, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def kept_channels(size: int, amount: float, round_to: int = 1) -> int:
    """Channels a group of ``size`` keeps when ``amount`` of them are removed: ``size - round(amount * size)``,
    at least one, and with ``round_to`` > 1 rounded to the nearest multiple of ``round_to`` (at least one
    multiple, never more than ``size``; groups smaller than ``round_to`` are not rounded).

    Inference kernels vectorise over channels (ONNX Runtime's NCHWc convolutions work in blocks of 8 on AVX2,
    16 on AVX-512), so a width that is not a multiple of the block can run slower than the wider unpruned
    layer; Torch-Pruning offers the same rounding (its ``round_to`` option).
    """
    keep = max(1, size - round(amount * size))
    if round_to > 1 and size >= round_to:
        keep = min(size, max(round_to, round_to * round(keep / round_to)))
    return keep


def prune_structured(model: nn.Module, example_input: torch.Tensor, amount: float | Mapping[str, float],
                     importance: Importance = "l1", layers: Sequence[str] | None = None,
                     round_to: int = 1) -> StructuredResult:
    """Remove ``round(amount * channels)`` of the lowest-importance channels of every prunable group.

    ``amount`` is one fraction in ``[0, 1)`` or ``{group key: fraction}``; at least one channel
    always stays, and ``round_to`` rounds what stays to a multiple (see :func:`kept_channels`).
    The model is modified in place and keeps its class.
    """
    groups = prunable_groups(model, example_input, layers)
    params0, macs0 = sum(p.numel() for p in model.parameters()), count_macs(model, example_input)
    counts: dict[str, int] = {}
    for g in groups:
        a = amount.get(g.key, 0.0) if isinstance(amount, Mapping) else amount
        check_range(f"amount[{g.key}]" if isinstance(amount, Mapping) else "amount", a, 0.0, 1.0, hi_open=True)
        counts[g.key] = kept_channels(g.size, a, round_to)
    before = {g.key: g.size for g in groups}
    prune_groups(model, groups, counts, importance)
    return StructuredResult(before, {g.key: g.size for g in groups}, params0,
                            sum(p.numel() for p in model.parameters()), macs0, count_macs(model, example_input))


def count_macs(model: nn.Module, example_input: torch.Tensor, *, nonzero: bool = False) -> int:
    """Multiply-accumulates of one forward pass of ``example_input`` (one sample) over Conv2d / Linear.

    With ``nonzero`` only MACs with a non-zero weight count (what a sparse accelerator executes).
    """
    total = 0
    for c in trace_layers(model, example_input[:1], lambda _n, m: isinstance(m, nn.Conv2d | nn.Linear)):
        w = c.module.weight
        assert isinstance(w, torch.Tensor)
        per_out = int(torch.count_nonzero(w)) if nonzero else w.numel()
        out = c.output_shape
        positions = out[-1] * out[-2] if isinstance(c.module, nn.Conv2d) else c.outputs_per_sample // max(1, out[-1])
        total += per_out * positions
    return total
