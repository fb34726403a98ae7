"""``crosslayer faults``: fault-injection campaigns on a trained model or a run directory's model."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    OutOpt,
    SeedOpt,
    console,
    emit,
    handle_errors,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("faults")(faults_cmd)


def _ints(text: str, name: str) -> tuple[int, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise ConfigError(f"{name} = {text!r} must be comma-separated integers, e.g. 7,6,0") from None


@handle_errors
def faults_cmd(
    run_dir: Path = typer.Argument(None, help="A run directory; its last model checkpoint (or --stage's) is used."),
    stage: str = typer.Option(None, "--stage", help="Which stage's checkpoint of RUN_DIR (default: the last)."),
    model: str = typer.Option("lenet5", "--model", "-m", help="Model name when no RUN_DIR is given."),
    weights: Path = typer.Option(None, "--weights", help="State dict for --model (weights_only=True)."),
    dataset: str = typer.Option("mnist", "--dataset", "-d"),
    test_limit: int = typer.Option(1000, "--test-limit", help="Fixed test subset: the first N test images."),
    target: str = typer.Option("weights", "--target", help="weights or activations."),
    campaign: str = typer.Option("sensitivity", "--campaign",
                                 help="Weights: per (layer, bit) 'sensitivity' or 'statistical' over all sites."),
    bits: str = typer.Option("", "--bits", help="Bit positions, e.g. 7,6 (default: every bit of the word)."),
    ber: float = typer.Option(None, "--ber", help="Bit-error rate in [0, 1] (memory errors instead of single flips)."),
    layer: list[str] = typer.Option([], "--layer", "-l", help="Target layer (repeatable; default: all)."),
    injections: int = typer.Option(0, "--injections", "-n", help="Faults per cell (0: from --margin/--confidence)."),
    margin: float = typer.Option(0.05, "--margin", help="Error margin of statistical fault injection."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level (sample size and intervals)."),
    representation: str = typer.Option("auto", "--representation",
                                       help="auto (codes if quantized), codes, or float32."),
    code_bits: int = typer.Option(8, "--code-bits", help="Code width when a float model is quantized for codes."),
    mode: str = typer.Option("flip", "--mode", help="BER faults: flip or stuck (random stuck-at per failing bit)."),
    flips: int = typer.Option(1, "--flips", help="Activations: bit flips per image."),
    trials: int = typer.Option(3, "--trials", help="Repetitions of BER / activation campaigns."),
    seed: int = SeedOpt, out: Path = OutOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt,
    as_json: bool = JsonOpt, verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Inject bit flips, stuck-at faults or memory bit errors into weights or activations and measure the
    accuracy drop with confidence intervals."""
    setup_logging(verbose)
    from crosslayer.data import load_dataset
    from crosslayer.device import resolve_device
    from crosslayer.errors import ConfigError
    from crosslayer.fileio import atomic_write_json
    from crosslayer.flow import load_run_model
    from crosslayer.models import build_model, load_weights
    from crosslayer.report import write_html
    from crosslayer.resilience.runner import FaultRunOptions, run_faults

    opts = FaultRunOptions(target=target, campaign=campaign, layers=tuple(layer), bits=_ints(bits, "--bits"),  # type: ignore[arg-type]
                           ber=ber, injections=injections, margin=margin, confidence=confidence,
                           representation=representation, code_bits=code_bits, mode=mode,  # type: ignore[arg-type]
                           flips=flips, trials=trials, seed=seed)
    if test_limit < 1:
        raise ConfigError(f"--test-limit = {test_limit}; allowed >= 1")
    test = load_dataset(dataset, "test", data_dir).subset(test_limit)
    if run_dir is not None:
        net = load_run_model(run_dir, stage)
    else:
        if weights is None:
            raise ConfigError("give a RUN_DIR, or --model with --weights (a trained state dict)")
        c, h, _ = test.input_shape
        net = load_weights(build_model(model, num_classes=test.num_classes, in_channels=c, image_size=h), weights)
    net.to(resolve_device(device))
    metrics, rep = run_faults(net, test.images, test.labels, opts)
    if out is not None:
        atomic_write_json(out / "faults.json", metrics)
        rep.save(out / "faults_report.json")
        write_html(out / "report.html", [rep], title="crosslayer faults")
    emit(metrics, as_json, title=f"faults: {metrics['campaign']}")
    if as_json:
        return
    from rich.console import Console
    from rich.table import Table

    for t in rep.tables:
        table = Table(title=t.title)
        for col in t.columns:
            table.add_column(str(col), justify="right")
        for row in t.rows:
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        Console().print(table)
    if out is not None:
        console.print(f"results: {out / 'faults.json'}  report: {out / 'report.html'}")
