"""Weight-storage accounting of a quantized model, counted from its integer codes.

Each quantized weight tensor is stored either dense (``bits`` per weight) or, when smaller, as its
non-zero codes with Deep Compression relative indices (Han et al., ICLR 2016). The counting and the
result type belong to :mod:`crosslayer.prune.storage` (:func:`~crosslayer.prune.storage.tensor_storage`,
:class:`~crosslayer.prune.storage.ModelStorage`), shared with the pruning stage, so the two stages' ratios
are comparable. Zeros are read from the codes, so small weights that round to code 0 count as zeros. Every
scale and non-zero zero point costs 32 bits. Biases and any other parameter stay fp32, dense, exactly as in
:func:`crosslayer.prune.storage.model_storage`.
"""

from __future__ import annotations

import torch
from torch import nn

from crosslayer.prune.storage import (
    CONV_INDEX_BITS,
    FC_INDEX_BITS,
    ModelStorage,
    TensorStorage,
    tensor_storage,
    weight_index_bits,
)
from crosslayer.quant.layers import QuantLayer

__all__ = ["QuantStorage", "TensorStorage", "quantized_storage"]

QuantStorage = ModelStorage
"""The storage of a quantized model: the one storage result type, :class:`ModelStorage`."""


@torch.no_grad()
def quantized_storage(model: nn.Module, *, conv_index_bits: int = CONV_INDEX_BITS,
                      fc_index_bits: int = FC_INDEX_BITS, sparse: bool | None = None) -> ModelStorage:
    """Storage of every parameter; quantized weights from their codes (sparse when that is smaller, or as forced)."""
    kinds = weight_index_bits(model, conv_index_bits, fc_index_bits)
    done: dict[str, TensorStorage] = {}
    for mname, m in model.named_modules():
        if not isinstance(m, QuantLayer) or m.weight_spec is None:
            continue
        pname = f"{mname}.weight" if mname else "weight"
        qt = m.weight_codes()
        scale_bits = 32 * (qt.scale.numel() + int(torch.count_nonzero(qt.zero_point)))
        done[pname] = tensor_storage(pname, qt.codes != 0, value_bits=m.weight_spec.bits, index_bits=kinds[pname],
                                     sparse=sparse, scale_bits=scale_bits)
    out: list[TensorStorage] = []
    for name, p in model.named_parameters():
        if name in done:
            out.append(done[name])
        else:
            out.append(tensor_storage(name, p.detach(), value_bits=32, index_bits=kinds.get(name), sparse=sparse))
    return ModelStorage(tuple(out))
