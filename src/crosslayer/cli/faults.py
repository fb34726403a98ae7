"""``crosslayer faults``: fault-injection campaigns on a trained model or a run directory's model."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
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
    app.command("faults")(faults_cmd)


def _ints(text: str, name: str) -> tuple[int, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise ConfigError(f"{name} = {text!r} must be comma-separated integers, e.g. 7,6,0") from None


@handle_errors
def faults_cmd(
    run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    dataset: str = DatasetOpt,
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
    from crosslayer.config import check_range, from_mapping
    from crosslayer.errors import ConfigError
    from crosslayer.fileio import atomic_write_json
    from crosslayer.report import write_html
    from crosslayer.resilience import FaultConfig, fault_report, inject_faults

    check_range("--test-limit", test_limit, 1)
    check_range("--code-bits", code_bits, 2, 16)
    if target not in ("weights", "activations"):
        raise ConfigError(f"--target {target!r}; allowed weights, activations")
    if campaign not in ("sensitivity", "statistical"):
        raise ConfigError(f"--campaign {campaign!r}; allowed sensitivity, statistical")
    kind = "activation_flips" if target == "activations" else "ber" if ber is not None else campaign
    cfg = from_mapping(FaultConfig, {
        "campaign": kind, "layers": list(layer), "bits": list(_ints(bits, "--bits")),
        "bers": [] if ber is None else [ber], "injections": injections, "margin": margin, "confidence": confidence,
        "representation": representation, "code_bits": code_bits, "mode": mode, "flips": flips, "trials": trials,
        "eval_limit": test_limit}, section="faults")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device).context("faults")
    res = inject_faults(ctx.model, cfg, ctx.data.test, seed=seed)
    metrics, rep = res.metrics(), fault_report(res)
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
