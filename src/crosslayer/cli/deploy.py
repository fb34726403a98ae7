"""``crosslayer pack``, ``crosslayer unpack`` and ``crosslayer export``: the deployable artefacts."""

from __future__ import annotations

from pathlib import Path

import typer
from torch import nn

from crosslayer.cli.common import JsonOpt, console, emit, handle_errors, setup_logging


def register(app: typer.Typer) -> None:
    app.command("pack")(pack_cmd)
    app.command("unpack")(unpack_cmd)
    app.command("export")(export_cmd)


def _model_from_run(run_dir: Path, stage: str | None) -> nn.Module:
    from crosslayer.flow import load_run_model

    return load_run_model(run_dir, stage)


@handle_errors
def pack_cmd(run_dir: Path = typer.Argument(..., help="Run directory of `crosslayer flow`."),
             out: Path = typer.Option(..., "--out", "-o", help="Packed model file to write (.xlm)."),
             stage: str = typer.Option(None, help="Stage whose model to pack (default: the last with one)."),
             conv_index_bits: int = typer.Option(8, help="Relative index width for conv layers."),
             fc_index_bits: int = typer.Option(5, help="Relative index width for fc layers."),
             as_json: bool = JsonOpt) -> None:
    """Pack a run's (pruned, quantized) model into one checksummed file; prints its exact storage."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.encode import write_packed
    from crosslayer.encode.stage import EncodeConfig

    cfg = from_mapping(EncodeConfig, {"conv_index_bits": conv_index_bits, "fc_index_bits": fc_index_bits},
                       section="pack")
    acct = write_packed(out, _model_from_run(run_dir, stage), conv_index_bits=cfg.conv_index_bits,
                        fc_index_bits=cfg.fc_index_bits)
    emit({"bytes": acct["bytes"], **{f"{k}_bits": v for k, v in acct["total_bits"].items()}}, as_json,
         title=f"packed {out}")


@handle_errors
def unpack_cmd(packed: Path = typer.Argument(..., help="A .xlm file."),
               out: Path = typer.Option(None, "--out", "-o", help="Write the rebuilt model's state dict (.pt)."),
               evaluate_on: str = typer.Option(None, "--eval", help="Evaluate on this dataset's test set."),
               data_dir: str = typer.Option(None, "--data-dir"), as_json: bool = JsonOpt) -> None:
    """Rebuild a PyTorch model from a packed file (validated: truncated or corrupt files are refused)."""
    setup_logging(False)
    from crosslayer.encode import unpack_model
    from crosslayer.encode.packfile import MAX_FILE_BYTES
    from crosslayer.errors import DataError

    if not packed.is_file():
        raise DataError(f"packed file {str(packed)!r} does not exist")
    size = packed.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"packed file {str(packed)!r} is {size} bytes; no legal packed file exceeds "
                        f"{MAX_FILE_BYTES} bytes")
    with packed.open("rb") as fh:
        model = unpack_model(fh.read(MAX_FILE_BYTES + 1))
    metrics: dict[str, object] = {"layers": sum(1 for _ in model.children()),
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
def export_cmd(run_dir: Path = typer.Argument(..., help="Run directory of `crosslayer flow`."),
               out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
               stage: str = typer.Option(None, help="Stage whose model to export (default: the last with one)."),
               as_json: bool = JsonOpt) -> None:
    """Export a run's model to ONNX: float, or int8 QDQ when it is quantized."""
    setup_logging(False)
    from crosslayer.encode.onnx_export import export_onnx
    from crosslayer.quant.layers import iter_quant_layers

    model = _model_from_run(run_dir, stage)
    export_onnx(model, out)
    emit({"written": str(out), "int8": any(True for _ in iter_quant_layers(model)), "bytes": out.stat().st_size},
         as_json, title="export")
