"""Paired accuracy comparisons of two models on the same images.

Both models see the same images, so only the images on which they disagree carry noise: the standard
error of the accuracy difference is that of two *dependent* proportions, the Wald form behind
McNemar's test (McNemar, Psychometrika 1947; Agresti, *Categorical Data Analysis*, 3rd ed., Wiley 2013,
Sec. 11.1). Used by the acceptance rules of iterative pruning and of approximate-multiplier selection.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from crosslayer.config import check_range
from crosslayer.errors import StageError

__all__ = ["one_sided_z", "paired_loss"]


def paired_loss(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(accuracy loss, its standard error), both as fractions, of ``candidate`` against ``reference`` from
    per-image correctness on the same images: ``(b - c) / n`` and ``sqrt((b + c) - (b - c)^2 / n) / n``,
    ``b`` the images only the reference gets right, ``c`` those only the candidate gets right."""
    r, c_ = reference.reshape(-1).bool(), candidate.reshape(-1).bool()
    if r.shape != c_.shape:
        raise StageError(f"per-image outcomes differ in length: reference {r.numel()}, candidate {c_.numel()}")
    n = r.numel()
    if n == 0:
        raise StageError("the evaluator returned no per-image outcomes (empty selection set)")
    b = int((r & ~c_).sum())
    c = int((~r & c_).sum())
    var = max(0.0, (b + c) - (b - c) ** 2 / n)
    return (b - c) / n, math.sqrt(var) / n


def one_sided_z(confidence: float) -> float:
    """Standard normal quantile of a one-sided ``confidence`` in [0.5, 1): 0 at 0.5, 1.645 at 0.95."""
    check_range("confidence", confidence, 0.5, 1.0, hi_open=True)
    return NormalDist().inv_cdf(confidence)
