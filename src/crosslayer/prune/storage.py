"""Honest weight-storage accounting: values plus index bits. The one owner of relative-index (Deep
Compression) accounting and of its result type; quantized storage (:mod:`crosslayer.quant.storage`) and the
sparse encoders of the packed file (:mod:`crosslayer.encode.sparse`) call it.

Han et al., "Deep Compression", ICLR 2016, Sec. 2: a pruned layer is stored as its non-zero values
with *relative* indices (the distance to the previous non-zero) of ``index_bits`` each: 8 bits for
conv layers and 5 bits for fully connected ones. When a gap does not fit in ``index_bits``, a filler
zero (a value plus an index) is inserted (:func:`relative_index_layout`). :func:`model_storage` stores a
layer as one flattened sequence (row-major over the weight tensor), so there are no row pointers; the
packed file's CSR / CSC records add them (:attr:`TensorStorage.pointer_bits`).

Every count is a :class:`TensorStorage` (one tensor) inside a :class:`ModelStorage` (a model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from crosslayer.config import check_range
from crosslayer.errors import StageError

__all__ = ["CONV_INDEX_BITS", "FC_INDEX_BITS", "LayerStorage", "ModelStorage", "StorageFormat", "TensorStorage",
           "csr_relative_index_bits", "csr_relative_index_entries", "model_storage", "relative_index_layout",
           "tensor_storage", "weight_index_bits"]

CONV_INDEX_BITS = 8
FC_INDEX_BITS = 5

StorageFormat = Literal["dense", "relative", "csr", "csc", "bitmask"]


def relative_index_layout(positions: np.ndarray, length: int, index_bits: int, *,
                          cover_tail: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Where the relative-index encoding of a sequence puts its filler entries (vectorised).

    ``positions``: the sorted positions of the non-zeros in a sequence of ``length`` values. An entry's
    index field holds the number of zeros skipped before it, at most ``2**index_bits - 1``; a longer run
    is bridged by filler entries (a zero value that skips the maximum run and is itself one position).

    Returns ``(runs, fillers, tail)``: per non-zero the zeros skipped before it (``runs``, what remains
    after the fillers is ``runs - fillers * 2**index_bits``) and the filler entries inserted before it;
    ``tail`` is the number of fillers bridging the zeros after the last non-zero, counted only with
    ``cover_tail`` (then fewer than ``2**index_bits`` positions stay uncovered at the end, which lets a
    reader bound the length an encoding can claim).
    """
    span = 1 << index_bits
    pos = np.asarray(positions, dtype=np.int64)
    runs = np.diff(np.concatenate(([-1], pos))) - 1
    fillers = runs // span
    last = int(pos[-1]) if pos.size else -1
    tail = (length - 1 - last) // span if cover_tail else 0
    return runs, fillers, int(tail)


def _nonzero_positions(mask_or_weight: torch.Tensor | np.ndarray) -> np.ndarray:
    a = mask_or_weight.detach().cpu().numpy() if isinstance(mask_or_weight, torch.Tensor) else np.asarray(
        mask_or_weight)
    return np.flatnonzero(a.reshape(-1))


def csr_relative_index_entries(mask_or_weight: torch.Tensor | np.ndarray, index_bits: int) -> tuple[int, int]:
    """``(non-zeros, filler zeros)`` of the relative-index encoding of a mask (True = kept) or a weight,
    flattened row-major (see :func:`relative_index_layout`; the zeros after the last non-zero cost nothing).
    """
    check_range("index_bits", index_bits, 1, 32)
    pos = _nonzero_positions(mask_or_weight)
    if pos.size == 0:
        return 0, 0
    _, fillers, _ = relative_index_layout(pos, int(pos[-1]) + 1, index_bits)
    return int(pos.size), int(fillers.sum())


def csr_relative_index_bits(mask_or_weight: torch.Tensor | np.ndarray, index_bits: int,
                            value_bits: int = 32) -> int:
    """Exact bits of a tensor stored as values + relative indices (Deep Compression), fillers included.

    >>> csr_relative_index_bits(torch.tensor([0., 1., 0., 0., 2.]), index_bits=2, value_bits=8)
    20
    """
    check_range("value_bits", value_bits, 1, 64)
    nnz, fill = csr_relative_index_entries(mask_or_weight, index_bits)
    return (nnz + fill) * (value_bits + index_bits)


@dataclass(frozen=True, kw_only=True)
class TensorStorage:
    """How one parameter tensor is stored, in bits.

    ``format``: ``dense`` (every value), ``relative`` (non-zeros and fillers with relative indices, one
    flattened sequence), ``csr`` / ``csc`` (the same per row / column, plus ``pointer_bits`` of row
    pointers) or ``bitmask`` (one presence bit per weight, then the non-zero values). ``value_bits`` and
    ``index_bits`` are the widths of one stored value and one index field; ``scale_bits`` counts the
    quantization scales and non-zero zero points (32 bits each).
    """

    name: str
    numel: int
    nonzeros: int
    value_bits: int
    format: StorageFormat = "dense"
    index_bits: int = 0
    fillers: int = 0
    pointer_bits: int = 0
    scale_bits: int = 0

    @property
    def sparse(self) -> bool:
        return self.format != "dense"

    @property
    def entries(self) -> int:
        """Stored values: every one (dense), the non-zeros (bitmask), non-zeros and fillers (relative)."""
        if self.format == "dense":
            return self.numel
        return self.nonzeros if self.format == "bitmask" else self.nonzeros + self.fillers

    @property
    def value_bits_total(self) -> int:
        return self.entries * self.value_bits

    @property
    def index_bits_total(self) -> int:
        if self.format == "dense":
            return 0
        return self.numel * self.index_bits if self.format == "bitmask" else self.entries * self.index_bits

    @property
    def bits(self) -> int:
        return self.value_bits_total + self.index_bits_total + self.pointer_bits + self.scale_bits

    @property
    def dense_bits(self) -> int:
        """The same tensor as dense fp32."""
        return self.numel * 32


LayerStorage = TensorStorage
"""The name the pruning stage gave :class:`TensorStorage` first."""


@dataclass(frozen=True)
class ModelStorage:
    """Per-tensor storage and the totals: ``compression_ratio`` = dense fp32 bits / stored bits."""

    tensors: tuple[TensorStorage, ...]

    @property
    def layers(self) -> tuple[TensorStorage, ...]:
        return self.tensors

    @property
    def bits(self) -> int:
        return sum(x.bits for x in self.tensors)

    @property
    def dense_bits(self) -> int:
        return sum(x.dense_bits for x in self.tensors)

    @property
    def dense_fp32_bits(self) -> int:
        return self.dense_bits

    @property
    def index_bits_total(self) -> int:
        return sum(x.index_bits_total for x in self.tensors)

    @property
    def scale_bits_total(self) -> int:
        return sum(x.scale_bits for x in self.tensors)

    @property
    def compression_ratio(self) -> float:
        return self.dense_bits / max(1, self.bits)

    @property
    def params(self) -> int:
        return sum(x.numel for x in self.tensors)

    @property
    def nonzeros(self) -> int:
        return sum(x.nonzeros for x in self.tensors)


def tensor_storage(name: str, nonzero: torch.Tensor | np.ndarray, *, value_bits: int, index_bits: int | None,
                   sparse: bool | None = None, scale_bits: int = 0) -> TensorStorage:
    """Storage of one tensor given its non-zero pattern: dense, or relative-index form (``index_bits``) when
    that is smaller (``sparse=None``), always (``True``) or never (``False``; also when ``index_bits`` is None)."""
    numel = nonzero.numel() if isinstance(nonzero, torch.Tensor) else int(np.size(nonzero))
    nnz, fill = csr_relative_index_entries(nonzero, index_bits) if index_bits is not None else (
        _nonzero_positions(nonzero).size, 0)
    dense = TensorStorage(name=name, numel=numel, nonzeros=nnz, value_bits=value_bits, scale_bits=scale_bits)
    if index_bits is None or sparse is False:
        return dense
    rel = TensorStorage(name=name, numel=numel, nonzeros=nnz, value_bits=value_bits, format="relative",
                        index_bits=index_bits, fillers=fill, scale_bits=scale_bits)
    return rel if sparse is True or rel.bits < dense.bits else dense


def weight_index_bits(model: nn.Module, conv_index_bits: int = CONV_INDEX_BITS,
                      fc_index_bits: int = FC_INDEX_BITS) -> dict[str, int]:
    """``{weight parameter name: relative index width}`` of every prunable weight
    (:func:`~crosslayer.prune.masks.prunable_weights`; conv: ``conv_index_bits``, matrices: ``fc_index_bits``)."""
    from crosslayer.prune.masks import prunable_weights

    try:
        weights = prunable_weights(model)
    except StageError:
        return {}
    return {k: conv_index_bits if w.dim() == 4 else fc_index_bits for k, w in weights.items()}


def model_storage(model: nn.Module, *, value_bits: int | Mapping[str, int] = 32,
                  conv_index_bits: int = CONV_INDEX_BITS, fc_index_bits: int = FC_INDEX_BITS,
                  sparse: bool | None = None) -> ModelStorage:
    """Storage of every parameter of ``model``.

    Conv / Linear weights are stored with relative indices (``conv_index_bits`` / ``fc_index_bits``)
    when that is smaller than dense storage (``sparse=None``), always (``True``) or never (``False``);
    biases and other parameters are dense. ``value_bits`` is one width or ``{param_name: bits}``
    (missing names: 32). Zeros are read from the weights themselves, so pruned models need no masks.
    """
    kinds = weight_index_bits(model, conv_index_bits, fc_index_bits)
    out: list[TensorStorage] = []
    for name, p in model.named_parameters():
        vb = value_bits.get(name, 32) if isinstance(value_bits, Mapping) else value_bits
        out.append(tensor_storage(name, p.detach(), value_bits=vb, index_bits=kinds.get(name), sparse=sparse))
    return ModelStorage(tuple(out))
