"""``crosslayer train`` and ``crosslayer eval``."""

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
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)


@handle_errors
def train_cmd(
    model: str = typer.Option("lenet5", "--model", "-m", help="lenet5, lenet300, vgg-small, resnet20, "
                                                           "mobilenetv2, or file.py:factory (code: it runs as code)."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist, fashion-mnist, cifar10, cifar100, "
                                                             "a .npz file or an image folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    force: bool = ForceOpt,
    epochs: int = typer.Option(10, help="Training epochs."),
    batch_size: int = typer.Option(64, help="Mini-batch size."),
    lr: float = typer.Option(0.05, help="Initial learning rate (cosine schedule)."),
    optimizer: str = typer.Option("sgd", help="sgd (momentum 0.9) or adam."),
    augment_shift: int = typer.Option(0, help="Random translation augmentation, in pixels (0 = off)."),
    augment_rotate: float = typer.Option(0.0, help="Random rotation augmentation, in degrees (0 = off)."),
    augment_scale: float = typer.Option(0.0, help="Random scale augmentation, fraction (0.1 = 0.9-1.1x; 0 = off)."),
    augment_flip: bool = typer.Option(False, "--augment-flip",
                                      help="Random horizontal flips (clothing, natural images; not digits)."),
    weights: Path = typer.Option(None, "--weights", help="State dict to start from (loaded with weights_only=True)."),
    train_limit: int = typer.Option(0, help="Use only the first N training images (0 = all)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Train again even if a cached result exists."),
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train a model; OUT becomes a run directory of one stage, baseline (metrics.json's baseline section: test
    accuracy, parameters, training seconds; report.html), plus OUT/weights.pt, the state dict."""
    setup_logging(verbose)
    from crosslayer.config import from_mapping
    from crosslayer.core_stages import BaselineConfig
    from crosslayer.fileio import save_torch
    from crosslayer.flow import ResolvedFlow, load_flow_config, load_run_model, run_flow

    flow = load_flow_config(None, {
        "model": model, "dataset": dataset, "seed": seed, "device": device, "data_dir": data_dir or "",
        "init_weights": str(weights) if weights else "", "train_limit": train_limit, "stages": ["baseline"],
    }).flow
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
               "augment_shift": augment_shift, "augment_rotate": augment_rotate, "augment_scale": augment_scale,
               "augment_flip": augment_flip, "use_cache": not no_cache}
    if optimizer == "adam":
        options["weight_decay"] = 0.0
    cfg = from_mapping(BaselineConfig, options, section="train")
    reports = run_flow(ResolvedFlow(flow, {"baseline": cfg}), out, force=force)
    save_torch(out / "weights.pt", load_run_model(out, "baseline", trusted_model=model).state_dict())
    emit(reports[-1].metrics, as_json, title=f"train {model} on {dataset}")
    if not as_json:
        console.print(f"run directory: {out}")


@handle_errors
def eval_cmd(
    run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt,
) -> None:
    """Test accuracy of a model: a run directory's (RUN_DIR, --stage) or --model with --weights."""
    setup_logging(False)
    from crosslayer.models import count_params
    from crosslayer.train import evaluate

    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       device=device).context("eval")
    res = evaluate(ctx.model, ctx.data.test)
    emit({"test_accuracy": res.accuracy, "test_loss": res.loss, "params": count_params(ctx.model), "n": res.n},
         as_json, title="eval")
