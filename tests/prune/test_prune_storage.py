"""Relative-index (Deep Compression) storage bits: exact counts against a reference encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from crosslayer.errors import ConfigError
from crosslayer.prune import (
    apply_masks,
    csr_relative_index_bits,
    csr_relative_index_entries,
    magnitude_masks,
    model_storage,
    prunable_weights,
)


def _reference_entries(flat: list[bool], index_bits: int) -> int:
    """Walk the sequence like an encoder: emit a filler whenever the gap reaches the field's span."""
    span, entries, gap = 1 << index_bits, 0, 0
    for nz in flat:
        gap += 1
        if nz or gap == span:
            entries += 1
            gap = 0
    # trailing zeros after the last non-zero need no entries
    last = max((i for i, v in enumerate(flat) if v), default=-1)
    tail = len(flat) - 1 - last
    return entries - tail // span


def test_small_examples() -> None:
    assert csr_relative_index_bits(torch.tensor([0., 1., 0., 0., 2.]), index_bits=2, value_bits=8) == 20
    one_far = torch.zeros(21)
    one_far[20] = 1.0
    assert csr_relative_index_entries(one_far, 3) == (1, 2)  # gap 21 with span 8: two fillers
    assert csr_relative_index_bits(one_far, 3, 5) == 3 * 8
    assert csr_relative_index_bits(torch.zeros(5, 5), 5) == 0
    assert csr_relative_index_bits(torch.ones(4, 3), 5) == 12 * 37


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=300), st.integers(1, 6))
def test_matches_reference_encoder(flat: list[bool], bits: int) -> None:
    nnz, fill = csr_relative_index_entries(np.array(flat), bits)
    assert nnz == sum(flat)
    assert nnz + fill == _reference_entries(flat, bits)


def test_index_bits_range() -> None:
    with pytest.raises(ConfigError, match="index_bits"):
        csr_relative_index_bits(torch.ones(3), 0)


def test_model_storage_dense_then_sparse() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    dense = model_storage(net)
    n = sum(p.numel() for p in net.parameters())
    assert dense.bits == 32 * n and dense.compression_ratio == pytest.approx(1.0)
    assert not any(x.sparse for x in dense.layers)
    masks, _ = magnitude_masks(prunable_weights(net), "class-uniform", 0.95)
    apply_masks(net, masks)
    sp = model_storage(net)
    fc = next(x for x in sp.layers if x.name == "2.weight")
    conv = next(x for x in sp.layers if x.name == "0.weight")
    assert fc.sparse and fc.index_bits == 5 and fc.bits == (fc.nonzeros + fc.fillers) * 37
    assert fc.nonzeros == round(0.05 * fc.numel)
    # 5-bit indices span 32 positions: at 5 % density the mean gap is 20, so some fillers occur
    assert fc.fillers > 0
    assert conv.index_bits in (0, 8)
    assert 10 < sp.compression_ratio < 20  # 20x fewer values, but indices + fillers + dense biases cost
    assert sp.index_bits_total == sum((x.nonzeros + x.fillers) * x.index_bits for x in sp.layers if x.sparse)
    q = model_storage(net, value_bits=8)
    assert q.bits < sp.bits
