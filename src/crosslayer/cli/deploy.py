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
    console,
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
    res = pack(ctx.model, cfg, out)
    emit({"bytes": res.file_bytes, **{f"{k}_bits": v for k, v in res.bits_by_part.items()},
          "weight_bits": res.weight_bits, "compression_ratio": res.compression_ratio,
          "file_compression_ratio": res.file_compression_ratio, "layer_formats": res.layer_formats}, as_json,
         title=f"packed {out}")


@handle_errors
def unpack_cmd(packed: Path = typer.Argument(..., help="A .xlm file."),
               out: Path = typer.Option(None, "--out", "-o", help="Write the rebuilt model's state dict (.pt; a "
                                                                  "state dict, never a pickled module)."),
               evaluate_on: str = typer.Option(None, "--eval", help="Evaluate on this dataset's test set."),
               data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Rebuild a PyTorch model from a packed file (validated: truncated or corrupt files are refused)."""
    setup_logging(False)
    from crosslayer.encode import unpack

    model = unpack(packed)
    metrics: dict[str, Any] = {"layers": sum(1 for _ in model.children()),
                               "params": sum(p.numel() for p in model.parameters())}
    if out is not None:
        from crosslayer.fileio import save_torch

        save_torch(out, model.state_dict())
        metrics["written"] = str(out)
    if evaluate_on:
        from crosslayer.data import load_dataset
        from crosslayer.train import evaluate

        metrics["test_accuracy"] = evaluate(model, load_dataset(evaluate_on, "test", data_dir)).accuracy
    emit(metrics, as_json, title=f"unpacked {packed}")
    if not as_json:
        console.print(model)


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
    res = export_onnx(ctx.model, cfg, out, test.images[:1], data=test.subset(check_images) if check_images else None)
    metrics: dict[str, Any] = {"written": str(res.path), "int8": res.int8, "bytes": res.file_bytes,
                               "max_abs_diff": res.max_abs_diff}
    if res.agreement is not None:
        metrics.update({"images": res.images, "top1_agreement": res.agreement, "onnx_accuracy": res.accuracy})
    for runtime, t in res.timing.items():
        key = runtime.lower().replace(" ", "_")
        metrics.update({f"{key}_latency_ms_b1": t["latency_ms_b1"], f"{key}_throughput_b256": t["throughput_b256"]})
    emit(metrics, as_json, title="export")
