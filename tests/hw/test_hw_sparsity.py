"""Compressed storage, skipped MACs and load imbalance (EIE / SCNN style) against hand computations."""

from __future__ import annotations

import math

import pytest

from crosslayer.errors import ConfigError
from crosslayer.hw.sparsity import (
    SparsityConfig,
    activation_imbalance,
    compressed_bits,
    skip_fraction,
    weight_imbalance,
)


def test_compressed_bits_relative_index_golden() -> None:
    # 100 values at density 0.5, 8-bit values, 4-bit indices, 2 columns of 16-bit pointers
    q16 = 0.5 ** 16
    pad = q16 / (1 - q16)
    bits, compressed = compressed_bits(100, 0.5, 8, 4, 16, 2)
    assert compressed
    assert bits == pytest.approx(50 * (1 + pad) * 12 + 32)


def test_compressed_bits_padding_grows_for_very_sparse_data() -> None:
    # density 0.01 with 2-bit indices: runs of >= 4 zeros need fillers: q^4 / (1 - q^4) per non-zero
    q4 = 0.99 ** 4
    bits, compressed = compressed_bits(10_000, 0.01, 8, 2, 16, 1)
    assert compressed
    assert bits == pytest.approx(100 * (1 + q4 / (1 - q4)) * 10 + 16)


def test_dense_storage_kept_when_compression_does_not_pay() -> None:
    bits, compressed = compressed_bits(100, 1.0, 8, 4, 16, 2)
    assert not compressed
    assert bits == 800


def test_skip_fraction_and_modes() -> None:
    assert skip_fraction(SparsityConfig(skip="none"), 0.1, 0.2) == 1.0
    assert skip_fraction(SparsityConfig(skip="weights"), 0.1, 0.2) == pytest.approx(0.1)
    assert skip_fraction(SparsityConfig(skip="activations"), 0.1, 0.2) == pytest.approx(0.2)
    assert skip_fraction(SparsityConfig(skip="both"), 0.1, 0.2) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="sparsity.skip = 'all' is unknown; allowed: none, weights"):
        SparsityConfig(skip="all")  # type: ignore[arg-type]


def test_weight_imbalance_from_measured_filter_nonzeros() -> None:
    # folds {4, 2} and {6, 0}: busiest lanes 4 + 6 against means 3 + 3
    assert weight_imbalance([4, 2, 6, 0], 2) == pytest.approx(10 / 6)
    assert weight_imbalance([5, 5, 5], 3) == 1.0


def test_activation_imbalance_normal_approximation() -> None:
    expected = (50 + 5 * math.sqrt(2 * math.log(4))) / 50
    assert activation_imbalance(100, 0.5, 4) == pytest.approx(expected)
    assert activation_imbalance(100, 1.0, 16) == 1.0
    assert activation_imbalance(2, 0.1, 10**6) == pytest.approx(2 / 0.2)  # capped at the dense length
