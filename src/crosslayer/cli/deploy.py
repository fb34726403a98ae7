"""``crosslayer pack``, ``crosslayer unpack`` and ``crosslayer export``: the deployable artefacts (thin shells over
:func:`crosslayer.encode.pack`, :func:`~crosslayer.encode.unpack` and :func:`~crosslayer.encode.export_onnx`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    ModelOpt,
    RunDirArg,
    StageOpt,
    WeightsOpt,
    emit,
    handle_errors,
    model_source,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("pack")(pack_cmd)
    app.command("unpack")(unpack_cmd)
    app.command("export")(export_cmd)


@handle_errors
def pack_cmd(run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
             dataset: str = DatasetOpt,
             out: Path = typer.Option(..., "--out", "-o", help="Packed model file to write (.xlm)."),
             conv_index_bits: int = typer.Option(8, help="Relative index width for conv layers."),
             fc_index_bits: int = typer.Option(5, help="Relative index width for fc layers."),
             data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Pack a (pruned, quantized) model into one checksummed file; prints its exact storage."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.encode import EncodeConfig, pack

    cfg = from_mapping(EncodeConfig, {"conv_index_bits": conv_index_bits, "fc_index_bits": fc_index_bits},
                       section="pack")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       device="cpu").context("pack")
    res = pack(ctx.model, cfg, out, ctx.data.test.images[:2])
    emit({"bytes": res.file_bytes, "graph": res.graph_kind, **{f"{k}_bits": v for k, v in res.bits_by_part.items()},
          "weight_bits": res.weight_bits, "compression_ratio": res.compression_ratio,
          "file_compression_ratio": res.file_compression_ratio, "layer_formats": res.layer_formats}, as_json,
         title=f"packed {out}")


@handle_errors
def unpack_cmd(packed: Path = typer.Argument(..., help="A .xlm file."),
               model: str = typer.Option(None, "--model", "-m", help="The packed model's factory (built-in name, "
                                         "file.py:factory or pkg.mod:factory): rebuild that PyTorch module with the "
                                         "packed weights. Without it the model runs in ONNX Runtime."),
               out: Path = typer.Option(None, "--out", "-o", help="Write the rebuilt model: an .onnx file (ONNX "
                                        "Runtime) or, with --model, its state dict (.pt; never a pickled module)."),
               evaluate_on: str = typer.Option(None, "--eval", help="Evaluate on this dataset's test set."),
               data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Rebuild a runnable model from a packed file (validated: truncated, corrupt or unsafe files are refused)."""
    setup_logging(False)
    from crosslayer.encode import OnnxModule, unpack

    base = None
    data = None
    if evaluate_on:
        from crosslayer.data import load_dataset

        data = load_dataset(evaluate_on, "test", data_dir)
    if model:
        from crosslayer.encode.packfile import read_packed
        from crosslayer.models import build_model

        shape, classes = _packed_sizes(packed, read_packed)
        base = build_model(model, num_classes=classes, in_channels=shape[0], image_size=shape[-1])
    restored = unpack(packed, model=base)
    metrics: dict[str, Any] = {"runtime": "ONNX Runtime" if isinstance(restored, OnnxModule) else "PyTorch",
                               "params": sum(p.numel() for p in restored.parameters())}
    if out is not None:
        from crosslayer.fileio import atomic_write_bytes, save_torch

        if isinstance(restored, OnnxModule):
            atomic_write_bytes(out, restored.onnx_bytes)
        else:
            save_torch(out, restored.state_dict())
        metrics["written"] = str(out)
    if data is not None:
        from crosslayer.train import evaluate

        metrics["test_accuracy"] = evaluate(restored, data).accuracy
    emit(metrics, as_json, title=f"unpacked {packed}")


def _packed_sizes(path: Path, read: Any) -> tuple[list[int], int]:
    """The input shape (C, H, W) and class count a packed file records (what the factory is built with)."""
    from crosslayer.errors import DataError

    meta = read(path.read_bytes()).meta
    shape, classes = meta.get("input"), meta.get("classes")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) and 0 < d < 1 << 16 for d in shape)
            or not isinstance(classes, int) or not 0 < classes < 1 << 20):
        raise DataError(f"packed file {str(path)!r} does not record its input shape and class count")
    return shape, classes


@handle_errors
def export_cmd(run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
               dataset: str = DatasetOpt,
               out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
               check_images: int = typer.Option(1000, "--check-images", help="Test images classified by ONNX Runtime "
                                                "and PyTorch to measure their top-1 agreement (0: none)."),
               speed: bool = typer.Option(False, "--speed", help="Also time PyTorch and ONNX Runtime on them."),
               repeats: int = typer.Option(3, "--repeats", help="Timing repeats (medians are reported)."),
               data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Export a model to ONNX (float, or int8 QDQ when it is quantized), checked in ONNX Runtime."""
    setup_logging(False)
    from crosslayer.config import check_range, from_mapping
    from crosslayer.encode import ExportConfig, export_onnx

    check_range("--check-images", check_images, 0)
    cfg = from_mapping(ExportConfig, {"speed": speed, "repeats": repeats}, section="export")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       device="cpu").context("export")
    test = ctx.data.test
    res = export_onnx(ctx.model, cfg, out, test.images[:2], data=test.subset(check_images) if check_images else None)
    metrics: dict[str, Any] = {"written": str(res.path), "int8": res.int8, "bytes": res.file_bytes,
                               "max_abs_diff": res.max_abs_diff}
    if res.agreement is not None:
        metrics.update({"images": res.images, "top1_agreement": res.agreement, "onnx_accuracy": res.accuracy,
                        "max_abs_logit_diff": res.max_abs_diff})
        if res.exact_agreement is not None:
            metrics["top1_agreement_qdq_as_written"] = res.exact_agreement
    for runtime, t in res.timing.items():
        key = runtime.lower().replace(" ", "_")
        metrics.update({f"{key}_latency_ms_b1": t["latency_ms_b1"], f"{key}_throughput_b256": t["throughput_b256"]})
    emit(metrics, as_json, title="export")
