"""``crosslayer explore``: the sparsity × bit-width × scheme sweep and its Pareto front."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import DataDirOpt, DeviceOpt, ForceOpt, JsonOpt, console, emit, handle_errors, setup_logging


def register(app: typer.Typer) -> None:
    app.command("explore")(explore_cmd)


def _floats(text: str, what: str) -> tuple[float, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what} must be a comma-separated list of numbers, got {text!r}") from exc


@handle_errors
def explore_cmd(
    run_dir: Path = typer.Argument(None, help="Run directory whose baseline to explore (or use --model/--weights)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output run directory."),
    model: str = typer.Option(None, "--model", "-m", help="Model name (default lenet5) or file.py:factory (with "
                                                          "--weights; with a RUN_DIR only to name its user factory)."),
    weights: Path = typer.Option(None, "--weights", help="Trained state dict (weights_only=True)."),
    dataset: str = typer.Option("mnist", "--dataset", "-d"),
    sparsities: str = typer.Option("0.5,0.8,0.9,0.95", help="Comma-separated sparsities."),
    bits: str = typer.Option("8,6,4", help="Comma-separated weight bit widths."),
    schemes: str = typer.Option("class-blind,class-uniform,class-distribution", help="Pruning schemes."),
    finetune_epochs: int = typer.Option(1, help="Fine-tuning epochs per pruned point."),
    budget: float = typer.Option(0.5, "--budget", help="Accuracy budget (pp) for the reported best point."),
    seed: int = typer.Option(0, "--seed"), device: str = DeviceOpt, data_dir: str = DataDirOpt,
    as_json: bool = JsonOpt, force: bool = ForceOpt,
) -> None:
    """Sweep pruning × quantization, report every point and the Pareto front (accuracy vs. storage)."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.explore.stage import ExploreConfig
    from crosslayer.flow import run_standalone

    cfg = from_mapping(ExploreConfig, {
        "sparsities": list(_floats(sparsities, "--sparsities")), "bits": [int(b) for b in _floats(bits, "--bits")],
        "schemes": [s.strip() for s in schemes.split(",") if s.strip()], "finetune_epochs": finetune_epochs,
        "budget_pp": budget}, section="explore")
    rep = run_standalone("explore", cfg, out, run_dir=run_dir, options={
        "model": model, "weights": str(weights) if weights else "", "dataset": dataset, "seed": seed,
        "device": device, "data_dir": data_dir or ""}, force=force)
    emit(rep.metrics, as_json, title="explore")
    if not as_json:
        console.print(f"report: {out / 'report.html'}")
