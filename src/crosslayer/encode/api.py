"""The verbs of the encoding step: :func:`pack` a model into the checksummed ``.xlm`` file (exact storage
accounting), :func:`unpack` one back into a runnable model, :func:`export_onnx` (float, or int8 QDQ for a
quantized model) checked in ONNX Runtime against PyTorch.

The packed file stores each matrix-product weight in the smallest of dense, relative-index CSR / CSC (Deep
Compression, Han et al., ICLR 2016) and bitmask, each stream fixed-width or Huffman coded, and the graph as
standard ONNX with those weights stripped out; see :mod:`crosslayer.encode.packing` and
:mod:`crosslayer.encode.packfile`. Both take any model ``torch.onnx`` can export (residual adds,
concatenation, depthwise convs, attention, functional ops); one it cannot export is a ``StageError`` with the
exporter's reason. The model passed in is never modified.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crosslayer.config import Config, check_range
from crosslayer.data import ImageDataset
from crosslayer.encode.onnx_export import onnx_model
from crosslayer.encode.onnx_graph import OnnxModule
from crosslayer.encode.packfile import MAX_FILE_BYTES
from crosslayer.encode.packing import pack_model, unpack_model
from crosslayer.encode.speed import ort_runner, time_runner, torch_runner
from crosslayer.errors import DataError, StageError
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.layers import iter_quant_layers
from crosslayer.train import predict

__all__ = ["EncodeConfig", "ExportConfig", "ExportResult", "PackResult", "export_onnx", "is_int8", "pack", "unpack"]

WEIGHT_PARTS = ("values", "indices", "pointers", "codebook")


@dataclass(frozen=True, kw_only=True)
class EncodeConfig(Config):
    """Relative-index widths of the sparse formats (Deep Compression: 8 bits for conv, 5 for fc)."""

    conv_index_bits: int = 8
    fc_index_bits: int = 5

    def validate(self) -> None:
        check_range("conv_index_bits", self.conv_index_bits, 1, 16)
        check_range("fc_index_bits", self.fc_index_bits, 1, 16)


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    """``speed``: also time PyTorch and ONNX Runtime on the data (``repeats`` medians of latency at batch 1
    and throughput at batch 256)."""

    speed: bool = True
    repeats: int = 3

    def validate(self) -> None:
        check_range("repeats", self.repeats, 1, 100)


@dataclass(frozen=True)
class PackResult:
    """The packed file and its exact storage, in bits by part (``header``, ``graph``, ``values``, ``indices``,
    ``pointers``, ``codebook``, ``bias``, ``tensors``; they sum to ``8 * file_bytes``), per weight too, the
    format each weight was stored in (dense, csr, csc or bitmask) and the kind of graph stored (``int8 QDQ`` or
    ``float``, with the reason when a quantized model's graph is float)."""

    path: Path
    file_bytes: int
    bits_by_part: dict[str, int]
    layer_bits: dict[str, dict[str, int]]
    layer_formats: dict[str, str]
    dense_fp32_bits: int
    graph_kind: str = "float"

    @property
    def weight_bits(self) -> int:
        """Bits of the weights: values, indices, row pointers and Huffman codebooks (no header, no bias)."""
        return sum(parts.get(k, 0) for parts in self.layer_bits.values() for k in WEIGHT_PARTS)

    @property
    def compression_ratio(self) -> float:
        """Dense fp32 weights / stored weight bits."""
        return self.dense_fp32_bits / max(1, self.weight_bits)

    @property
    def file_compression_ratio(self) -> float:
        """Dense fp32 weights / the whole file (header, biases and checksum included)."""
        return self.dense_fp32_bits / 8 / max(1, self.file_bytes)


@dataclass(frozen=True)
class ExportResult:
    """An ONNX file checked in ONNX Runtime: the largest logit difference from PyTorch (on the example input
    and, where data were given, on every image of it); where data were given, top-1 agreement with PyTorch,
    ONNX Runtime's accuracy and the timings (``{"PyTorch" | "ONNX Runtime": {"latency_ms_b1",
    "throughput_b256"}}``)."""

    path: Path
    file_bytes: int
    int8: bool
    max_abs_diff: float
    images: int = 0
    agreement: float | None = None
    accuracy: float | None = None
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    exact_agreement: float | None = None
    """int8 only: top-1 agreement when ONNX Runtime runs the QDQ graph as written (no integer-kernel fusion,
    see :class:`~crosslayer.encode.onnx_graph.OnnxModule`); ``agreement`` is with its default integer kernels."""


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` holds quantized layers (its ONNX export is then int8 QDQ)."""
    return any(True for _ in iter_quant_layers(model))


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval()


def _weight_count(model: nn.Module) -> int:
    return sum(int(np.prod(m.weight.shape)) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


def _images(example_input: torch.Tensor) -> torch.Tensor:
    x = example_input.detach().cpu().float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or len(x) == 0:
        raise DataError(f"example_input must be images (N, C, H, W) or one image (C, H, W), got shape {tuple(x.shape)}")
    return x


def pack(model: nn.Module, config: EncodeConfig, path: str | Path, example_input: torch.Tensor) -> PackResult:
    """Write ``model`` (pruned and / or quantized, or float) as a packed ``.xlm`` file at ``path`` (atomically);
    ``example_input`` (images ``(N, C, H, W)`` or one ``(C, H, W)``) fixes the input shape the graph is traced on.

    ``dense_fp32_bits`` of the result counts the model's Conv2d / Linear weights as dense float32 (the
    reference of ``compression_ratio``)."""
    m = _cpu_copy(model)
    data, acct = pack_model(m, _images(example_input), conv_index_bits=config.conv_index_bits,
                            fc_index_bits=config.fc_index_bits)
    out = atomic_write_bytes(path, data)
    return PackResult(path=Path(out), file_bytes=int(acct["bytes"]), bits_by_part=dict(acct["total_bits"]),
                      layer_bits={k: dict(v) for k, v in acct["layers"].items()},
                      layer_formats=dict(acct["formats"]), dense_fp32_bits=32 * _weight_count(m),
                      graph_kind=str(acct["graph_kind"]))


def unpack(source: str | Path | bytes, *, model: nn.Module | None = None) -> nn.Module:
    """The runnable model of a packed file (a path, or its bytes): an ONNX Runtime module
    (:class:`~crosslayer.encode.onnx_graph.OnnxModule`, usable with ``evaluate`` / ``predict``) with the packed
    weights restored, or, given ``model`` (a freshly built instance of the packed model's class, e.g. from the
    user's factory), that module with the packed weights, layer types and shapes restored. The file is data
    and treated as hostile: a missing, oversized, truncated or corrupt file is a clear error (``DataError`` /
    ``PackFormatError``)."""
    if isinstance(source, bytes | bytearray):
        return unpack_model(bytes(source), model)
    p = Path(source)
    if not p.is_file():
        raise DataError(f"packed file {str(p)!r} does not exist or is not a file")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"packed file {str(p)!r} is {size} bytes; no legal packed file exceeds {MAX_FILE_BYTES} bytes")
    with p.open("rb") as fh:
        return unpack_model(fh.read(MAX_FILE_BYTES + 1), model)


def export_onnx(model: nn.Module, config: ExportConfig, path: str | Path, example_input: torch.Tensor, *,
                data: ImageDataset | None = None) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` (atomically): float, or int8 QDQ when it is quantized.

    ``example_input`` (a batch ``(N, C, H, W)``, or one image ``(C, H, W)``) fixes the input shape and is run
    through both runtimes. With ``data``, every image of it is classified by both (top-1 agreement, ONNX
    Runtime's accuracy) and, with ``config.speed``, both runtimes are timed on it.
    """
    x = _images(example_input)
    m = _cpu_copy(model)
    proto = onnx_model(m, example=x)
    blob = proto.SerializeToString()
    out = Path(atomic_write_bytes(path, blob))
    run = ort_runner(blob)
    try:
        got = run(x.numpy())
    except Exception as exc:  # ONNX Runtime raises its own types; a shape mismatch is the user's input
        raise StageError(f"ONNX Runtime cannot run the export on example_input {tuple(x.shape)}: {exc}") from exc
    with torch.no_grad():
        ref = m(x).numpy()
    res = ExportResult(path=out, file_bytes=len(blob), int8=is_int8(m), max_abs_diff=float(np.abs(got - ref).max()))
    if data is None:
        return res
    images = data.images.numpy()
    ort_logits = np.concatenate([run(images[i:i + 1000]) for i in range(0, len(images), 1000)])
    torch_logits = predict(m, data.images).numpy()
    timing: dict[str, dict[str, float]] = {}
    if config.speed:
        for runtime, runner in (("PyTorch", torch_runner(m)), ("ONNX Runtime", run)):
            timing[runtime] = time_runner(runner, images, repeats=config.repeats)
    exact = None
    if res.int8:
        exact_pred = predict(OnnxModule(blob), data.images).argmax(1).numpy()
        exact = float((exact_pred == torch_logits.argmax(1)).mean())
    return ExportResult(path=out, file_bytes=len(blob), int8=res.int8, exact_agreement=exact,
                        max_abs_diff=max(res.max_abs_diff, float(np.abs(ort_logits - torch_logits).max())),
                        images=len(images), agreement=float((ort_logits.argmax(1) == torch_logits.argmax(1)).mean()),
                        accuracy=float((ort_logits.argmax(1) == data.labels.numpy()).mean()), timing=timing)
