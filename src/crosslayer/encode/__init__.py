"""Sparse encodings (relative-index CSR / CSC, bitmask), Huffman coding and the packed model file."""

from crosslayer.encode.huffman import HuffmanCode, build_code
from crosslayer.encode.packfile import PackFormatError, pack_model, read_packed, unpack_model, write_packed
from crosslayer.encode.sparse import (
                                      BitmaskEncoding,
                                      RelativeCSR,
                                      decode_relative,
                                      encode_bitmask,
                                      encode_csc,
                                      encode_csr,
                                      encode_relative,
)

__all__ = ["BitmaskEncoding", "HuffmanCode", "PackFormatError", "RelativeCSR", "build_code", "decode_relative",
           "encode_bitmask", "encode_csc", "encode_csr", "encode_relative", "pack_model", "read_packed",
           "unpack_model", "write_packed"]
