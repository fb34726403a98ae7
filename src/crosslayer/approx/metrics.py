"""Error metrics of a multiplier over an operand distribution (pure NumPy).

Following the usual definitions of approximate-arithmetic papers (e.g. Liang, Han, Lombardi, IEEE TC
2013; Mrazek et al., DATE 2017 for EvoApproxLib), with error ``e = approx - exact`` and the operand pair
``(w, a)`` drawn from a distribution ``p``:

- ``med``  mean error distance ``E|e|`` (the x-axis of the survey's Fig. 9);
- ``mred`` mean relative error distance ``E[|e| / |w a|]`` over pairs with a non-zero exact product;
- ``wce``  worst-case error ``max |e|`` over pairs with ``p > 0``;
- ``error_rate`` ``P(e != 0)``;
- ``bias`` mean error ``E[e]``;
- ``nmed`` MED normalised by the largest exact product magnitude of the operand range.

"uniform" draws every operand pair of the table's range with equal probability; a layer distribution
is the product of the weight-code and activation-code histograms of that layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from crosslayer.approx.tables import Multiplier
from crosslayer.errors import ConfigError, StageError

__all__ = ["ErrorMetrics", "error_metrics", "operand_histograms", "uniform_metrics"]


@dataclass(frozen=True)
class ErrorMetrics:
    med: float
    mred: float
    wce: float
    error_rate: float
    bias: float
    nmed: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def error_metrics(mult: Multiplier, w_values: np.ndarray, a_values: np.ndarray,
                  p_w: np.ndarray | None = None, p_a: np.ndarray | None = None) -> ErrorMetrics:
    """Metrics of ``mult`` for weights ``w_values`` (probabilities ``p_w``) x activations ``a_values``
    (``p_a``), drawn independently; ``None`` probabilities mean uniform."""
    w = np.asarray(w_values, dtype=np.int64).ravel()
    a = np.asarray(a_values, dtype=np.int64).ravel()
    if w.size == 0 or a.size == 0:
        raise ConfigError("error metrics need at least one weight and one activation value")
    pw = np.full(w.size, 1.0 / w.size) if p_w is None else np.asarray(p_w, dtype=np.float64).ravel()
    pa = np.full(a.size, 1.0 / a.size) if p_a is None else np.asarray(p_a, dtype=np.float64).ravel()
    if pw.shape != w.shape or pa.shape != a.shape or (pw < 0).any() or (pa < 0).any():
        raise ConfigError("operand probabilities must be non-negative and match the operand values")
    if pw.sum() <= 0 or pa.sum() <= 0:
        raise ConfigError("operand probabilities sum to zero")
    p = (pw / pw.sum())[:, None] * (pa / pa.sum())[None, :]
    exact = w[:, None] * a[None, :]
    err = (mult(w[:, None], a[None, :]) - exact).astype(np.float64)
    ed = np.abs(err)
    nz = exact != 0
    pnz = p[nz].sum()
    mred = float((p[nz] * ed[nz] / np.abs(exact[nz])).sum() / pnz) if pnz > 0 else 0.0
    support = p > 0
    peak = float(np.abs(exact).max()) or 1.0
    med = float((p * ed).sum())
    return ErrorMetrics(med=med, mred=mred, wce=float(ed[support].max()), error_rate=float(p[err != 0].sum()),
                        bias=float((p * err).sum()), nmed=med / peak)


def uniform_metrics(mult: Multiplier, w_range: tuple[int, int] | None = None,
                    a_range: tuple[int, int] | None = None) -> ErrorMetrics:
    """Metrics over uniformly distributed operands (default: the table's own 256 x 256 range)."""
    lo = mult.lo
    wr = w_range or (lo, lo + 255)
    ar = a_range or (lo, lo + 255)
    return error_metrics(mult, np.arange(wr[0], wr[1] + 1), np.arange(ar[0], ar[1] + 1))


def operand_histograms(layer: nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """(weight values, their frequencies, activation values, their frequencies) of a quantized layer,
    the activations being the codes of ``inputs`` (the layer's input tensor on real data)."""
    from crosslayer.quant import QuantLayer

    if not isinstance(layer, QuantLayer) or layer.weight_spec is None or layer.act_spec is None:
        raise StageError("layer has no integer weight and activation codes: quantize the model first")
    wv, wc = np.unique(layer.weight_codes().codes.cpu().numpy(), return_counts=True)
    av, ac = np.unique(layer.input_codes(inputs).codes.cpu().numpy(), return_counts=True)
    return wv.astype(np.int64), wc.astype(np.float64), av.astype(np.int64), ac.astype(np.float64)
