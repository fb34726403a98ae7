"""``crosslayer explore``: the sparsity × bit-width × scheme sweep and its Pareto front (the ``explore`` stage, whose
verb is :func:`crosslayer.explore.pareto_sweep`)."""

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
    app.command("explore")(explore_cmd)


def _floats(text: str, what: str) -> tuple[float, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what} must be a comma-separated list of numbers, got {text!r}") from exc


@handle_errors
def explore_cmd(
    run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Output run directory."),
    sparsities: str = typer.Option("0.5,0.8,0.9,0.95", help="Comma-separated sparsities."),
    bits: str = typer.Option("8,6,4", help="Comma-separated weight bit widths."),
    schemes: str = typer.Option("class-blind,class-uniform,class-distribution", help="Pruning schemes."),
    finetune_epochs: int = typer.Option(1, help="Fine-tuning epochs per pruned point."),
    finetune_limit: int = typer.Option(0, help="Training images each fine-tuning uses (0 = all)."),
    budget: float = typer.Option(0.5, "--budget", help="Validation accuracy budget (pp) of the reported best point."),
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt,
    as_json: bool = JsonOpt, force: bool = ForceOpt,
) -> None:
    """Sweep pruning × quantization, report every point and the Pareto front (accuracy vs. storage)."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.explore import ExploreConfig

    cfg = from_mapping(ExploreConfig, {
        "sparsities": list(_floats(sparsities, "--sparsities")), "bits": [int(b) for b in _floats(bits, "--bits")],
        "schemes": [s.strip() for s in schemes.split(",") if s.strip()], "finetune_epochs": finetune_epochs,
        "finetune_limit": finetune_limit, "budget_pp": budget}, section="explore")
    rep = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device).run("explore", cfg, out, force=force)
    emit(rep.metrics, as_json, title="explore")
    if not as_json:
        console.print(f"run directory: {out}  report: {out / 'report.html'}")
