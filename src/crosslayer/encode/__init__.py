"""Sparse encodings (relative-index CSR / CSC, bitmask), Huffman coding, the packed model file and ONNX export.

The verbs: :func:`pack` / :func:`unpack` (the ``.xlm`` file) and :func:`export_onnx` (see :mod:`crosslayer.encode.api`).
"""

from crosslayer.encode.api import (
                                      EncodeConfig,
                                      ExportConfig,
                                      ExportResult,
                                      PackResult,
                                      export_onnx,
                                      pack,
                                      unpack,
)
from crosslayer.encode.huffman import HuffmanCode, build_code
from crosslayer.encode.onnx_graph import OnnxModule
from crosslayer.encode.packfile import PackFormatError, read_packed
from crosslayer.encode.packing import pack_model, unpack_model
from crosslayer.encode.sparse import (
                                      BitmaskEncoding,
                                      RelativeCSR,
                                      decode_relative,
                                      encode_bitmask,
                                      encode_csc,
                                      encode_csr,
                                      encode_relative,
)

__all__ = ["BitmaskEncoding", "EncodeConfig", "ExportConfig", "ExportResult", "HuffmanCode", "OnnxModule",
           "PackFormatError", "PackResult", "RelativeCSR", "build_code", "decode_relative", "encode_bitmask",
           "encode_csc", "encode_csr", "encode_relative", "export_onnx", "pack", "pack_model", "read_packed", "unpack",
           "unpack_model"]
