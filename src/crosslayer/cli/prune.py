"""``crosslayer prune``: the iterative pruning schedule on a model + weights, or on a flow's RUN_DIR."""

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
    app.command("prune")(prune_cmd)


def _floats(text: str, name: str) -> tuple[float, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"{name} = {text!r} must be comma-separated numbers, e.g. 0.5,0.8,0.9") from None


@handle_errors
def prune_cmd(
    run_dir: Path = typer.Argument(None, help="A flow run directory: prune the model its last stage left."),
    model: str = typer.Option(None, "--model", "-m", help="lenet5 (default), lenet300, vgg-small, resnet20, "
                                                          "mobilenetv2, or file.py:factory "
                                                          "(with --weights; with RUN_DIR: names its user factory)."),
    weights: Path = typer.Option(None, "--weights", help="Trained state dict of --model."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset name or path (default mnist; with RUN_DIR: its "
                                                              "dataset)."),
    scheme: str = typer.Option("class-blind", "--scheme", help="class-blind, class-uniform or class-distribution."),
    budget: float = typer.Option(0.1, "--budget", help="Allowed validation accuracy loss in percentage points."),
    stop_confidence: float = typer.Option(
        0.5, "--stop-confidence", help="Stop only when the validation images show a loss beyond --budget at this "
                                       "one-sided confidence (paired test; 0.5: the observed loss decides)."),
    shift: int = typer.Option(0, "--shift", help="Random shift (pixels) augmenting the fine-tuning."),
    targets: str = typer.Option("0.6,0.8,0.9,0.93,0.95", "--targets",
                                help="Increasing sparsities (or channel fractions with --structured)."),
    structured: bool = typer.Option(False, "--structured", help="Remove whole channels instead of weights."),
    importance: str = typer.Option("l1", "--importance", help="Channel importance for --structured: l1 or l2."),
    round_to: int = typer.Option(1, "--round-to", help="With --structured: keep channel counts multiples of this "
                                                      "(8 suits ONNX Runtime on AVX2 CPUs)."),
    layers: str = typer.Option("", "--layers", help="Comma-separated layer names to prune (default: all)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs per step."),
    lr: float = typer.Option(0.001, "--lr", help="Fine-tuning learning rate (Adam)."),
    train_limit: int = typer.Option(10000, "--train-limit", help="Training images used (0 = all)."),
    test_limit: int = typer.Option(0, "--test-limit", help="Test images used (0 = all)."),
    out: Path = typer.Option(Path("runs/prune"), "--out", "-o", help="Output run directory (resumable)."),
    force: bool = ForceOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Prune iteratively within an accuracy budget; OUT becomes a run directory (the pruned model, its masks,
    report.html) that every other command accepts. Re-running into the same --out resumes an interrupted
    run from its last completed step."""
    setup_logging(verbose)
    from crosslayer.config import from_mapping
    from crosslayer.flow import run_standalone
    from crosslayer.prune.stage import PruneConfig

    cfg = from_mapping(PruneConfig, {
        "scheme": scheme, "targets": list(_floats(targets, "--targets")), "budget_pp": budget,
        "stop_confidence": stop_confidence, "augment_shift": shift, "structured": structured,
        "importance": importance, "round_to": round_to, "finetune_epochs": epochs, "finetune_lr": lr,
        "layers": [s.strip() for s in layers.split(",") if s.strip()]}, section="prune")
    rep = run_standalone("prune", cfg, out, run_dir=run_dir, force=force, options={
        "model": model, "weights": str(weights) if weights else "", "dataset": dataset, "seed": seed,
        "device": device, "data_dir": data_dir or "", "train_limit": train_limit, "test_limit": test_limit})
    metrics = {k: v for k, v in rep.metrics.items() if k != "layer_sparsity"}
    emit(metrics, as_json, title=f"prune ({rep.metrics['scheme']})")
    if not as_json:
        console.print(f"run directory: {out}  report: {out / 'report.html'}")
