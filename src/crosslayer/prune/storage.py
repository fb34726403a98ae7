"""Honest weight-storage accounting for sparse models: values plus index bits.

Han et al., "Deep Compression", ICLR 2016, Sec. 2: a pruned layer is stored as its non-zero values
with *relative* indices (the distance to the previous non-zero) of ``index_bits`` each: 8 bits for
conv layers and 5 bits for fully connected ones. When a gap does not fit in ``index_bits``, a filler
zero (a value plus an index) is inserted. The layer is stored as one flattened sequence (row-major
over the weight tensor), so there are no row pointers.

These are pure functions of tensors, reused by the quantization, exploration and encoding stages
(pass ``value_bits`` < 32 for quantized values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crosslayer.config import check_range

__all__ = ["CONV_INDEX_BITS", "FC_INDEX_BITS", "LayerStorage", "ModelStorage", "csr_relative_index_bits",
           "csr_relative_index_entries", "model_storage"]

CONV_INDEX_BITS = 8
FC_INDEX_BITS = 5


def _nonzero_positions(mask_or_weight: torch.Tensor | np.ndarray) -> np.ndarray:
    a = mask_or_weight.detach().cpu().numpy() if isinstance(mask_or_weight, torch.Tensor) else np.asarray(
        mask_or_weight)
    return np.flatnonzero(a.reshape(-1))


def csr_relative_index_entries(mask_or_weight: torch.Tensor | np.ndarray, index_bits: int) -> tuple[int, int]:
    """``(non-zeros, filler zeros)`` of the relative-index encoding of a mask (True = kept) or a weight.

    An entry's index field holds ``gap - 1`` where ``gap`` is the distance from the previous stored
    entry (the first entry counts from position -1), so one field spans gaps of 1 to ``2**index_bits``;
    a longer gap needs ``(gap - 1) // 2**index_bits`` filler entries.
    """
    check_range("index_bits", index_bits, 1, 32)
    pos = _nonzero_positions(mask_or_weight).astype(np.int64)
    if pos.size == 0:
        return 0, 0
    gaps = np.diff(np.concatenate(([-1], pos)))
    fillers = int(((gaps - 1) // (1 << index_bits)).sum())
    return int(pos.size), fillers


def csr_relative_index_bits(mask_or_weight: torch.Tensor | np.ndarray, index_bits: int,
                            value_bits: int = 32) -> int:
    """Exact bits of a tensor stored as values + relative indices (Deep Compression), fillers included.

    >>> csr_relative_index_bits(torch.tensor([0., 1., 0., 0., 2.]), index_bits=2, value_bits=8)
    20
    """
    check_range("value_bits", value_bits, 1, 64)
    nnz, fill = csr_relative_index_entries(mask_or_weight, index_bits)
    return (nnz + fill) * (value_bits + index_bits)


@dataclass(frozen=True)
class LayerStorage:
    """Storage of one parameter tensor: ``sparse`` tells whether the relative-index form was chosen."""

    name: str
    numel: int
    nonzeros: int
    fillers: int
    value_bits: int
    index_bits: int
    sparse: bool
    bits: int

    @property
    def dense_bits(self) -> int:
        return self.numel * 32


@dataclass(frozen=True)
class ModelStorage:
    """Per-tensor storage and the totals: ``compression_ratio`` = dense fp32 bits / stored bits."""

    layers: tuple[LayerStorage, ...]

    @property
    def bits(self) -> int:
        return sum(x.bits for x in self.layers)

    @property
    def dense_bits(self) -> int:
        return sum(x.dense_bits for x in self.layers)

    @property
    def index_bits_total(self) -> int:
        return sum((x.nonzeros + x.fillers) * x.index_bits for x in self.layers if x.sparse)

    @property
    def compression_ratio(self) -> float:
        return self.dense_bits / max(1, self.bits)

    @property
    def params(self) -> int:
        return sum(x.numel for x in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(x.nonzeros for x in self.layers)


def model_storage(model: nn.Module, *, value_bits: int | Mapping[str, int] = 32,
                  conv_index_bits: int = CONV_INDEX_BITS, fc_index_bits: int = FC_INDEX_BITS,
                  sparse: bool | None = None) -> ModelStorage:
    """Storage of every parameter of ``model``.

    Conv / Linear weights are stored with relative indices (``conv_index_bits`` / ``fc_index_bits``)
    when that is smaller than dense storage (``sparse=None``), always (``True``) or never (``False``);
    biases and other parameters are dense. ``value_bits`` is one width or ``{param_name: bits}``
    (missing names: 32). Zeros are read from the weights themselves, so pruned models need no masks.
    """
    weight_kind: dict[str, int] = {}
    for mname, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            weight_kind[f"{mname}.weight" if mname else "weight"] = (
                conv_index_bits if isinstance(m, nn.Conv2d) else fc_index_bits)
    out: list[LayerStorage] = []
    for name, p in model.named_parameters():
        vb = value_bits.get(name, 32) if isinstance(value_bits, Mapping) else value_bits
        dense = p.numel() * vb
        nnz = int(torch.count_nonzero(p.detach()))
        ib = weight_kind.get(name)
        if ib is None or sparse is False:
            out.append(LayerStorage(name, p.numel(), nnz, 0, vb, 0, False, dense))
            continue
        n, fill = csr_relative_index_entries(p, ib)
        bits = (n + fill) * (vb + ib)
        use_sparse = sparse is True or bits < dense
        out.append(LayerStorage(name, p.numel(), nnz, fill if use_sparse else 0, vb, ib if use_sparse else 0,
                                use_sparse, bits if use_sparse else dense))
    return ModelStorage(tuple(out))
