"""Unstructured magnitude pruning: the three schemes of See et al., "Compression of Neural Machine
Translation Models via Pruning", CoNLL 2016, as used for CNNs by Marchisio et al., "PruNet:
Class-Blind Pruning Method for Deep Neural Networks", IJCNN 2018 (survey Fig. 2 and Fig. 7).

- ``class-blind``: one global magnitude threshold over every prunable weight (the ``k`` smallest
  magnitudes of the whole network go).
- ``class-uniform``: the same fraction is pruned in every layer.
- ``class-distribution``: per layer, weights with ``|w| <= lambda * std(layer)`` go (Han et al.,
  NIPS 2015, use the same "quality parameter times standard deviation" rule).

Everything here is a pure function of tensors: masks are ``dict[param_name, bool tensor]`` with
``True`` = kept. Prunable parameters are the matrix-product weights: the weight of every ``nn.Conv2d`` /
``nn.Linear`` (and their subclasses, e.g. quantized layers; depthwise, grouped and bias-free ones included;
the output projection of ``nn.MultiheadAttention`` is an ``nn.Linear``) and the input projection of every
``nn.MultiheadAttention`` (``in_proj_weight``, or ``q/k/v_proj_weight`` when key and value sizes differ).
Biases, normalisation parameters (BatchNorm, LayerNorm), embeddings and parameters a model reads directly
(e.g. a learned position embedding) stay dense, as in the papers: they are few and are not multiplied
as a matrix with the activations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from crosslayer.config import check_range
from crosslayer.errors import ConfigError, StageError

__all__ = [
    "ATTENTION_WEIGHTS",
    "SCHEMES",
    "Masks",
    "Scheme",
    "apply_masks",
    "blind_masks",
    "distribution_masks",
    "lambda_for_sparsity",
    "layer_sparsity",
    "magnitude_masks",
    "mask_sparsity",
    "prunable_weights",
    "uniform_masks",
    "weights_of",
]

ATTENTION_WEIGHTS: tuple[str, ...] = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
"""The prunable parameters of ``nn.MultiheadAttention`` besides its ``out_proj`` (an ``nn.Linear``)."""

Scheme = Literal["class-blind", "class-uniform", "class-distribution"]
SCHEMES: tuple[str, ...] = ("class-blind", "class-uniform", "class-distribution")
Masks = dict[str, torch.Tensor]


def prunable_weights(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Parameter]:
    """``{"<module>.weight": parameter}`` of the model's Conv2d / Linear layers, in model order.

    ``layers`` restricts the result to those module names (e.g. ``["conv1", "fc1"]``); a name that is
    not a prunable layer raises ``ConfigError`` listing the allowed names. A model without any
    Conv2d / Linear raises ``StageError``.
    """
    found: dict[str, nn.Parameter] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(m.weight, nn.Parameter):
            found[f"{name}.weight" if name else "weight"] = m.weight
        elif isinstance(m, nn.MultiheadAttention):
            for attr in ATTENTION_WEIGHTS:
                p = getattr(m, attr, None)
                if isinstance(p, nn.Parameter):
                    found[f"{name}.{attr}" if name else attr] = p
    if not found:
        raise StageError(f"model {type(model).__name__} has no prunable layers (no nn.Conv2d or nn.Linear)")
    if not layers:
        return found
    owner = {k: _owner(k) for k in found}
    allowed = list(dict.fromkeys(owner.values()))
    unknown = [n for n in layers if n not in found and n.removesuffix(".weight") not in allowed]
    if unknown:
        raise ConfigError(f"layer(s) {', '.join(map(repr, unknown))} are not prunable layers of "
                          f"{type(model).__name__}; allowed: {', '.join(allowed)}")
    wanted = {n.removesuffix(".weight") for n in layers} | set(layers)
    return {k: v for k, v in found.items() if owner[k] in wanted or k in wanted}


def _owner(param: str) -> str:
    """The module owning a prunable parameter (``conv1.weight``: ``conv1``; ``attn.in_proj_weight``: ``attn``)."""
    mod, _, attr = param.rpartition(".")
    return mod if attr == "weight" or attr in ATTENTION_WEIGHTS else param


def weights_of(weights: Mapping[str, torch.Tensor] | nn.Module) -> Mapping[str, torch.Tensor]:
    """The prunable weights of a model (every Conv2d / Linear weight), or the mapping as given."""
    return prunable_weights(weights) if isinstance(weights, nn.Module) else weights


def _check_sparsity(sparsity: float) -> None:
    check_range("sparsity", sparsity, 0.0, 1.0, hi_open=True)


def _prev(prev: Mapping[str, torch.Tensor] | None, name: str, w: torch.Tensor) -> torch.Tensor:
    if prev is None or name not in prev:
        return torch.ones_like(w, dtype=torch.bool)
    m = prev[name]
    if m.shape != w.shape:
        raise StageError(f"mask for {name!r} has shape {tuple(m.shape)}, the weight {tuple(w.shape)}")
    return m.to(device=w.device, dtype=torch.bool)


def _smallest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask that drops exactly the ``k`` smallest entries of flat ``scores`` (ties by position)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        # A stable sort makes ties deterministic; topk/kthvalue tie-breaking is unspecified.
        order = torch.sort(scores, stable=True).indices
        keep[order[:k]] = False
    return keep


def blind_masks(weights: Mapping[str, torch.Tensor] | nn.Module, sparsity: float,
                prev: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Class-blind: prune the ``round(sparsity * N)`` smallest magnitudes over all ``weights`` together.

    Weights already pruned in ``prev`` count as the smallest (magnitude 0), so masks only shrink.
    """
    weights = weights_of(weights)
    _check_sparsity(sparsity)
    names = list(weights)
    scores = [weights[n].detach().abs().masked_fill(~_prev(prev, n, weights[n]), 0.0).flatten().cpu()
              for n in names]
    flat = torch.cat(scores)
    keep = _smallest_k(flat, round(sparsity * flat.numel()))
    out: Masks = {}
    i = 0
    for n, s in zip(names, scores, strict=True):
        out[n] = keep[i:i + s.numel()].view_as(weights[n]).to(weights[n].device)
        i += s.numel()
    return out


def uniform_masks(weights: Mapping[str, torch.Tensor] | nn.Module, sparsity: float,
                  prev: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Class-uniform: prune the ``round(sparsity * n_l)`` smallest magnitudes of each layer ``l``."""
    weights = weights_of(weights)
    _check_sparsity(sparsity)
    out: Masks = {}
    for n, w in weights.items():
        p = _prev(prev, n, w)
        s = w.detach().abs().masked_fill(~p, 0.0).flatten()
        out[n] = _smallest_k(s, round(sparsity * s.numel())).view_as(w)
    return out


def distribution_masks(weights: Mapping[str, torch.Tensor] | nn.Module, lam: float,
                       prev: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Class-distribution: per layer, keep ``|w| > lam * std(w)`` (std over the whole layer tensor)."""
    weights = weights_of(weights)
    check_range("lambda", lam, 0.0)
    out: Masks = {}
    for n, w in weights.items():
        wd = w.detach()
        thr = lam * float(wd.float().std()) if wd.numel() > 1 else 0.0
        out[n] = _prev(prev, n, w) & (wd.abs() > thr)
    return out


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of pruned (False) entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(1, total)


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction pruned per mask."""
    return {n: 1.0 - int(m.sum()) / max(1, m.numel()) for n, m in masks.items()}


def lambda_for_sparsity(weights: Mapping[str, torch.Tensor] | nn.Module, sparsity: float,
                        prev: Mapping[str, torch.Tensor] | None = None, *, tol: float = 1e-4,
                        max_iter: int = 60) -> float:
    """The smallest ``lambda`` whose class-distribution masks reach overall ``sparsity`` (bisection).

    Overall sparsity grows monotonically with ``lambda``, so bisection converges; the result is the
    upper end of the final bracket, hence the reached sparsity is ``>= sparsity`` (up to ties).
    """
    weights = weights_of(weights)
    _check_sparsity(sparsity)
    lo, hi = 0.0, 1.0
    while mask_sparsity(distribution_masks(weights, hi, prev)) < sparsity:
        hi *= 2.0
        if hi > 1e6:
            raise StageError(f"class-distribution cannot reach sparsity {sparsity}: weights have zero spread")
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if mask_sparsity(distribution_masks(weights, mid, prev)) >= sparsity:
            hi = mid
        else:
            lo = mid
        if hi - lo < tol * max(hi, 1e-12):
            break
    return hi


def magnitude_masks(weights: Mapping[str, torch.Tensor] | nn.Module, scheme: str, sparsity: float,
                    prev: Mapping[str, torch.Tensor] | None = None) -> tuple[Masks, float | None]:
    """Masks of ``scheme`` at overall target ``sparsity``; returns ``(masks, lambda or None)``.

    For ``class-distribution`` the per-layer threshold is ``lambda * std`` with the ``lambda`` found by
    :func:`lambda_for_sparsity`, so the three schemes can be compared at equal overall sparsity.
    """
    weights = weights_of(weights)
    if scheme == "class-blind":
        return blind_masks(weights, sparsity, prev), None
    if scheme == "class-uniform":
        return uniform_masks(weights, sparsity, prev), None
    if scheme == "class-distribution":
        lam = lambda_for_sparsity(weights, sparsity, prev)
        return distribution_masks(weights, lam, prev), lam
    raise ConfigError(f"scheme = {scheme!r} is not allowed; choose one of {', '.join(map(repr, SCHEMES))}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero every pruned weight of ``model`` in place (usable as ``fit(..., on_step=...)``)."""
    params = dict(model.named_parameters())
    for name, m in masks.items():
        p = params.get(name)
        if p is None:
            raise StageError(f"mask names parameter {name!r}, which the model does not have")
        if m.shape != p.shape:
            raise StageError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(p.shape)}")
        p.mul_(m.to(device=p.device, dtype=p.dtype))
    return model
