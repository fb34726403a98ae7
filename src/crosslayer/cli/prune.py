"""``crosslayer prune``: the iterative pruning schedule on a model + weights, or on a flow's RUN_DIR."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import DataDirOpt, DeviceOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging


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
    model: str = typer.Option("lenet5", "--model", "-m", help="lenet5, lenet300, vgg-small, or file.py:factory "
                                                               "(with --weights; ignored with RUN_DIR)."),
    weights: Path = typer.Option(None, "--weights", help="Trained state dict of --model."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="mnist or fashion-mnist (ignored with RUN_DIR)."),
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
    layers: str = typer.Option("", "--layers", help="Comma-separated layer names to prune (default: all)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs per step."),
    lr: float = typer.Option(0.001, "--lr", help="Fine-tuning learning rate (Adam)."),
    train_limit: int = typer.Option(10000, "--train-limit", help="Training images used (0 = all)."),
    test_limit: int = typer.Option(0, "--test-limit", help="Test images used (0 = all)."),
    out: Path = typer.Option(Path("runs/prune"), "--out", "-o", help="Output directory (resumable)."),
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Prune iteratively within an accuracy budget; writes OUT/pruned.pt, OUT/masks.pt, OUT/report.html.

    Re-running with the same options resumes an interrupted run from its last completed step.
    """
    setup_logging(verbose)
    from crosslayer.config import from_mapping, load_toml
    from crosslayer.data import load_splits
    from crosslayer.device import resolve_device
    from crosslayer.errors import ConfigError
    from crosslayer.fileio import atomic_write_json, ensure_writable_dir, save_torch
    from crosslayer.flow import FlowConfig, load_run_model
    from crosslayer.models import build_model, load_weights
    from crosslayer.prune.schedule import IterativePruner, ScheduleConfig
    from crosslayer.prune.stage import fill_report
    from crosslayer.report import Report, write_html

    cfg = from_mapping(ScheduleConfig, {
        "scheme": scheme, "targets": list(_floats(targets, "--targets")), "budget_pp": budget,
        "stop_confidence": stop_confidence, "augment_shift": shift, "structured": structured,
        "importance": importance, "finetune_epochs": epochs, "finetune_lr": lr,
        "layers": [s.strip() for s in layers.split(",") if s.strip()]}, section="prune")
    limits = {"train_limit": train_limit or None, "test_limit": test_limit or None}
    if run_dir is not None:
        flow_doc = load_toml(run_dir / "config.toml").get("flow", {})
        flow = from_mapping(FlowConfig, flow_doc, section="flow")
        net = load_run_model(run_dir)
        data = load_splits(flow.dataset, data_dir or flow.data_dir or None, val_fraction=flow.val_fraction,
                           seed=flow.seed, train_limit=flow.train_limit or None, test_limit=flow.test_limit or None)
    else:
        if weights is None:
            raise ConfigError("give a trained model: --weights FILE (with --model) or a flow RUN_DIR")
        data = load_splits(dataset, data_dir or None, seed=seed, **limits)
        c, h, _ = data.input_shape
        net = load_weights(build_model(model, num_classes=data.num_classes, in_channels=c, image_size=h), weights)
    net.to(resolve_device(device))
    outdir = ensure_writable_dir(out)
    outcome = IterativePruner(net, data, cfg, seed=seed, state_path=outdir / "schedule_state.pt").run()
    rep = Report("prune")
    fill_report(rep, outcome, net, cfg)
    rep.seed = seed
    rep.save(outdir / "prune.json")
    save_torch(outdir / "pruned.pt", outcome.model)
    save_torch(outdir / "pruned.state_dict.pt", outcome.model.state_dict())
    save_torch(outdir / "masks.pt", {k: v.cpu() for k, v in outcome.masks.items()})
    metrics = {k: v for k, v in rep.metrics.items() if k != "layer_sparsity"}
    atomic_write_json(outdir / "metrics.json", {"prune": rep.metrics})
    write_html(outdir / "report.html", [rep], title="crosslayer prune")
    emit(metrics, as_json, title=f"prune ({rep.metrics['scheme']})")
    if not as_json:
        console.print(f"pruned model: {outdir / 'pruned.pt'}  report: {outdir / 'report.html'}")
