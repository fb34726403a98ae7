"""``crosslayer quantize``: fixed-point / binary / ternary quantization of a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    SeedOpt,
    console,
    emit,
    handle_errors,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)


@handle_errors
def quantize_cmd(
    run_dir: Path = typer.Argument(None, help="A run directory: quantize the model its last stage left "
                                               "(its data settings are reused). Else give --weights."),
    model: str = typer.Option(None, "--model", "-m", help="lenet5 (default), lenet300, vgg-small, or file.py:factory "
                                                          "(with a RUN_DIR: only to name the run's user factory)."),
    weights: Path = typer.Option(None, "--weights", help="Trained state dict of --model (weights_only=True)."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist or fashion-mnist."),
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
    from crosslayer.quant.runner import run_quantize

    cfg = from_mapping(QuantizeConfig, {
        "mode": mode, "weight_bits": bits, "act_bits": act_bits, "per_channel": per_channel,
        "symmetric": symmetric, "calibration": calibration, "qat_epochs": qat_epochs, "qat_lr": qat_lr,
        "sweep": sweep, "budget_pp": budget_pp}, section="quantize")
    flow_opts = {"model": model, "dataset": dataset, "weights": str(weights) if weights else "", "seed": seed,
                 "device": device, "data_dir": data_dir or "", "train_limit": train_limit, "test_limit": test_limit}
    report = run_quantize(cfg, out, run_dir=run_dir, flow_options=flow_opts, force=force)
    emit(report.metrics, as_json, title=f"quantize ({cfg.mode})")
    if not as_json:
        console.print(f"run directory: {out}  report: {out / 'report.html'}")
