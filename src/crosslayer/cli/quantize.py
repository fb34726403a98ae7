"""``crosslayer quantize``: fixed-point / binary / ternary quantization of a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    RunDirArg,
    SeedOpt,
    StageOpt,
    WeightsOpt,
    console,
    emit,
    handle_errors,
    model_source,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)


@handle_errors
def quantize_cmd(
    run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt,
    bits: int = typer.Option(8, "--bits", "-b", help="Weight bit width (1 with --mode binary, 2-16 otherwise)."),
    act_bits: int = typer.Option(8, "--act-bits", help="Activation bit width 2-16; 0 keeps activations float."),
    mode: str = typer.Option("ptq", "--mode", help="ptq, qat, binary or ternary."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="One weight scale per output channel."),
    symmetric: bool = typer.Option(True, "--symmetric/--asymmetric", help="Symmetric (no zero point) or affine."),
    calibration: str = typer.Option("minmax", "--calibration", help="minmax, percentile or mse."),
    qat_epochs: int = typer.Option(2, "--qat-epochs", help="Fine-tuning epochs for qat / binary / ternary."),
    qat_lr: float = typer.Option(1e-3, "--qat-lr", help="Fine-tuning learning rate (Adam)."),
    sweep: bool = typer.Option(False, "--sweep", help="Also sweep bit widths for the lowest lossless one."),
    budget_pp: float = typer.Option(0.1, "--budget-pp", help="Sweep: allowed accuracy loss in percentage points."),
    train_limit: int = typer.Option(10000, "--train-limit", help="Training images used (calibration, QAT)."),
    test_limit: int = typer.Option(0, "--test-limit", help="Test images used (0 = all)."),
    out: Path = typer.Option(Path("runs/quantize"), "--out", "-o", help="Output run directory."),
    force: bool = ForceOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Quantize weights and activations (PTQ, QAT, binary, ternary); writes OUT/metrics.json and a report."""
    setup_logging(verbose)
    from crosslayer.config import from_mapping
    from crosslayer.quant.pipeline import QuantizeConfig

    cfg = from_mapping(QuantizeConfig, {
        "mode": mode, "weight_bits": bits, "act_bits": act_bits, "per_channel": per_channel,
        "symmetric": symmetric, "calibration": calibration, "qat_epochs": qat_epochs, "qat_lr": qat_lr,
        "sweep": sweep, "budget_pp": budget_pp}, section="quantize")
    src = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device, train_limit=train_limit, test_limit=test_limit)
    report = src.run("quantize", cfg, out, force=force)
    emit(report.metrics, as_json, title=f"quantize ({cfg.mode})")
    if not as_json:
        console.print(f"run directory: {out}  report: {out / 'report.html'}")
