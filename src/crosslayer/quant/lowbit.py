"""Binary and ternary weights as pure tensor functions, with straight-through gradients.

- Binary, XNOR-Net (Rastegari et al., ECCV 2016): ``B = sign(W)``, ``alpha = mean |W|`` per output
  channel, so ``W ~ alpha * B`` with codes in {-1, +1}. The gradient passes straight through where
  ``|W| <= 1`` (the clipped STE of BinaryConnect / XNOR-Net) and is cancelled outside.
- Ternary, TWN (Li & Liu, "Ternary Weight Networks", 2016): ``delta = 0.7 * E|W|``, codes
  ``sign(W) * [|W| > delta]`` in {-1, 0, +1}, ``alpha = mean |W|`` over the weights above ``delta``.
  The gradient passes straight through (identity STE).

Pruned weights (exact zeros) keep the code 0, so the sparsity of a pruned model survives
binarization (its binary codes are then in {-1, 0, +1}); ``E|W|`` and ``alpha`` are taken over the
non-zero weights, which is exactly the papers' definition for a dense layer.
"""

from __future__ import annotations

import torch

__all__ = ["TWN_THRESHOLD", "binary_codes", "fake_binary", "fake_ternary", "ternary_codes"]

TWN_THRESHOLD = 0.7


def _dims(w: torch.Tensor, per_channel: bool, axis: int) -> list[int]:
    if not per_channel or w.dim() == 0:
        return list(range(w.dim()))
    a = axis % w.dim()
    return [d for d in range(w.dim()) if d != a]


def _mean_abs(w: torch.Tensor, keep: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Mean of ``|w|`` over the entries where ``keep`` is true (keepdim), 0 where none is kept."""
    if not dims:
        return (w.abs() * keep).float()
    s = (w.abs() * keep).sum(dim=dims, keepdim=True)
    n = keep.sum(dim=dims, keepdim=True).clamp(min=1)
    return (s / n).float()


def binary_codes(w: torch.Tensor, per_channel: bool = True, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """XNOR-Net codes (int32, sign of ``w``; 0 where ``w`` is exactly 0) and scales ``alpha``."""
    wd = w.detach()
    nz = wd != 0
    alpha = _mean_abs(wd, nz, _dims(wd, per_channel, axis))
    codes = torch.where(wd > 0, 1, -1).to(torch.int32) * nz.to(torch.int32)
    return codes, alpha


def ternary_codes(w: torch.Tensor, per_channel: bool = False, axis: int = 0,
                  threshold: float = TWN_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN codes in {-1, 0, +1} (int32) and scales ``alpha`` (``delta = threshold * E|W|``)."""
    wd = w.detach()
    dims = _dims(wd, per_channel, axis)
    delta = threshold * _mean_abs(wd, wd != 0, dims)
    big = wd.abs() > delta
    alpha = _mean_abs(wd, big, dims)
    codes = (torch.sign(wd) * big).to(torch.int32)
    return codes, alpha


def _ste(w: torch.Tensor, wq: torch.Tensor, grad_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Value ``wq``, gradient w.r.t. ``w`` equal to ``grad_mask`` (identity when None)."""
    delta = w - w.detach()
    if grad_mask is not None:
        delta = delta * grad_mask
    return wq.detach() + delta


def fake_binary(w: torch.Tensor, per_channel: bool = True, axis: int = 0,
                alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * sign(w)`` forward; clipped straight-through gradient (``|w| <= 1``) backward."""
    codes, a = binary_codes(w, per_channel, axis)
    scale = a if alpha is None else alpha
    return _ste(w, codes.to(w.dtype) * scale, (w.detach().abs() <= 1).to(w.dtype))


def fake_ternary(w: torch.Tensor, per_channel: bool = False, axis: int = 0,
                 alpha: torch.Tensor | None = None) -> torch.Tensor:
    """TWN ternary weights forward; identity straight-through gradient backward."""
    codes, a = ternary_codes(w, per_channel, axis)
    scale = a if alpha is None else alpha
    return _ste(w, codes.to(w.dtype) * scale)
