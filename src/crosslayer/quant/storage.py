"""Weight-storage accounting of a quantized model, counted from its integer codes.

Each quantized weight tensor is stored either dense (``bits`` per weight) or, when smaller, as its
non-zero codes with Deep Compression relative indices (Han et al., ICLR 2016; the counting function
is :func:`crosslayer.prune.storage.csr_relative_index_entries`, shared with the pruning stage). Zeros
are read from the codes, so small weights that round to code 0 count as zeros. Every scale and
non-zero zero point costs 32 bits. Biases and any other parameter stay fp32, dense, exactly as in
:func:`crosslayer.prune.storage.model_storage`, so the two stages' ratios are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crosslayer.prune.storage import CONV_INDEX_BITS, FC_INDEX_BITS, csr_relative_index_entries
from crosslayer.quant.layers import QuantLayer

__all__ = ["QuantStorage", "TensorStorage", "quantized_storage"]


@dataclass(frozen=True)
class TensorStorage:
    """How one parameter tensor is stored (``sparse``: relative-index form)."""

    name: str
    numel: int
    nonzeros: int
    value_bits: int
    index_bits: int
    fillers: int
    sparse: bool
    scale_bits: int
    bits: int


@dataclass(frozen=True)
class QuantStorage:
    """Per-tensor storage and totals; ``compression_ratio`` = dense fp32 bits / stored bits."""

    tensors: tuple[TensorStorage, ...]

    @property
    def bits(self) -> int:
        return sum(t.bits for t in self.tensors)

    @property
    def dense_fp32_bits(self) -> int:
        return 32 * sum(t.numel for t in self.tensors)

    @property
    def index_bits_total(self) -> int:
        return sum((t.nonzeros + t.fillers) * t.index_bits for t in self.tensors if t.sparse)

    @property
    def scale_bits_total(self) -> int:
        return sum(t.scale_bits for t in self.tensors)

    @property
    def compression_ratio(self) -> float:
        return self.dense_fp32_bits / max(1, self.bits)

    @property
    def nonzeros(self) -> int:
        return sum(t.nonzeros for t in self.tensors)

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)


def _weight_storage(name: str, codes: torch.Tensor, value_bits: int, scale_bits: int,
                    index_bits: int, sparse: bool | None) -> TensorStorage:
    numel = codes.numel()
    dense = numel * value_bits + scale_bits
    nnz, fill = csr_relative_index_entries(codes != 0, index_bits)
    sparse_bits = (nnz + fill) * (value_bits + index_bits) + scale_bits
    use = sparse is True or (sparse is None and sparse_bits < dense)
    return TensorStorage(name, numel, nnz, value_bits, index_bits if use else 0, fill if use else 0, use, scale_bits,
                         sparse_bits if use else dense)


@torch.no_grad()
def quantized_storage(model: nn.Module, *, conv_index_bits: int = CONV_INDEX_BITS,
                      fc_index_bits: int = FC_INDEX_BITS, sparse: bool | None = None) -> QuantStorage:
    """Storage of every parameter; quantized weights from their codes (sparse when that is smaller, or as forced)."""
    done: dict[str, TensorStorage] = {}
    for mname, m in model.named_modules():
        if not isinstance(m, QuantLayer) or m.weight_spec is None:
            continue
        pname = f"{mname}.weight" if mname else "weight"
        qt = m.weight_codes()
        n_scales = qt.scale.numel()
        n_zp = int(torch.count_nonzero(qt.zero_point))
        ib = conv_index_bits if isinstance(m, nn.Conv2d) else fc_index_bits
        done[pname] = _weight_storage(pname, qt.codes, m.weight_spec.bits, 32 * (n_scales + n_zp), ib, sparse)
    out: list[TensorStorage] = []
    kinds = {f"{n}.weight" if n else "weight": (conv_index_bits if isinstance(m, nn.Conv2d) else fc_index_bits)
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, p in model.named_parameters():
        if name in done:
            out.append(done[name])
        elif name in kinds:
            out.append(_weight_storage(name, p.detach(), 32, 0, kinds[name], sparse))
        else:
            out.append(TensorStorage(name, p.numel(), int(torch.count_nonzero(p)), 32, 0, 0, False, 0,
                                     32 * p.numel()))
    return QuantStorage(tuple(out))
