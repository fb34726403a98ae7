import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslayer.encode import (
    build_code,
    decode_relative,
    encode_bitmask,
    encode_csc,
    encode_csr,
    encode_relative,
    huffman,
)
from crosslayer.encode.bits import pack_uint, unpack_uint
from crosslayer.encode.sparse import relative_entries
from crosslayer.errors import CrossLayerError


def test_relative_index_filler_as_in_deep_compression():
    # Han et al., Fig. 2 style: with 3-bit indices a gap of 8 zeros needs a filler zero.
    x = np.zeros(20, dtype=np.int64)
    x[1], x[11] = 5, 7  # 1 zero before index 1, 9 zeros before index 11
    vals, gaps = encode_relative(x, 3)
    assert vals.tolist() == [5, 0, 7]
    assert gaps.tolist() == [1, 7, 1]
    np.testing.assert_array_equal(decode_relative(vals, gaps, 20), x)


def _zero_small(data: list[int]) -> np.ndarray:
    x = np.array(data, dtype=np.int64)
    x[np.abs(x) < 6] = 0
    return x


# sparse rows: small values zeroed, so long zero runs appear
sparse_rows = st.lists(st.integers(-8, 8), min_size=1, max_size=300).map(_zero_small)


@settings(max_examples=60, deadline=None)
@given(sparse_rows, st.integers(1, 8))
def test_relative_roundtrip(x, bits):
    vals, gaps = encode_relative(x, bits)
    assert (gaps < (1 << bits)).all()
    np.testing.assert_array_equal(decode_relative(vals, gaps, len(x)), x)


def test_csr_csc_bitmask_roundtrip_and_bits():
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, size=(30, 40))
    w[rng.random(w.shape) < 0.9] = 0
    for enc in (encode_csr(w, 5), encode_csc(w, 5)):
        np.testing.assert_array_equal(enc.to_dense(), w)
        b = enc.storage(4)
        assert b.value_bits_total == 4 * b.entries and b.index_bits_total == 5 * b.entries
        assert b.nonzeros == int((w != 0).sum()) and b.entries == b.nonzeros + b.fillers
        assert b.pointer_bits == (enc.shape[0] + 1) * enc.pointer_bits()
        assert b.bits == b.value_bits_total + b.index_bits_total + b.pointer_bits
    bm = encode_bitmask(w)
    np.testing.assert_array_equal(bm.to_dense(), w)
    assert bm.storage(4).index_bits_total == w.size and bm.storage(4).bits == w.size + 4 * int((w != 0).sum())


def test_bits_pack_roundtrip_and_overflow():
    v = np.array([0, 1, 30, 31, 17])
    assert unpack_uint(pack_uint(v, 5), 5, 5).tolist() == v.tolist()
    assert len(pack_uint(v, 5)) == 4  # 25 bits -> 4 bytes
    with pytest.raises(CrossLayerError, match="does not fit"):
        pack_uint(np.array([32]), 5)
    with pytest.raises(CrossLayerError, match="too short"):
        unpack_uint(b"\x00", 5, 5)


def test_huffman_is_optimal_and_roundtrips():
    rng = np.random.default_rng(1)
    data = rng.choice([0, 1, 2, 3, -1, -2], p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], size=5000)
    code = build_code(data)
    stream, nbits = huffman.encode(data, code)
    assert nbits == code.payload_bits(data)
    np.testing.assert_array_equal(huffman.decode(stream, nbits, len(data), code), data)
    # Within 1 bit per symbol of the entropy (Shannon's bound for a prefix code).
    p = np.bincount(data + 2) / len(data)
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert entropy <= nbits / len(data) < entropy + 1
    kraft = sum(2.0 ** -float(n) for n in code.lengths)
    assert kraft == pytest.approx(1.0)


def test_huffman_decode_rejects_garbage():
    code = build_code(np.array([0, 0, 1, 2]))
    with pytest.raises(CrossLayerError):
        huffman.decode(b"\xff", 8, 50, code)


@settings(max_examples=60, deadline=None)
@given(sparse_rows, st.integers(1, 6))
def test_relative_cover_tail_bounds_the_row_length(x, bits):
    """With the tail covered, a row of k entries is shorter than (k + 1) * 2**bits (what the reader checks)."""
    vals, _ = encode_relative(x, bits)
    tail_vals, tail_gaps = relative_entries(x, bits, cover_tail=True)
    assert len(x) < (len(tail_vals) + 1) << bits
    assert tail_vals[:len(vals)].tolist() == vals.tolist() and (tail_vals[len(vals):] == 0).all()
    np.testing.assert_array_equal(decode_relative(tail_vals, tail_gaps, len(x)), x)


def test_unpack_uint_matches_pack_for_every_width():
    rng = np.random.default_rng(2)
    for width in (1, 2, 7, 8, 13, 16, 31, 32):
        v = rng.integers(0, 1 << width, size=101)
        assert unpack_uint(pack_uint(v, width), 101, width).tolist() == v.tolist()
