"""``crosslayer flow``, ``crosslayer report`` and ``crosslayer stages``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from crosslayer.cli.common import DataDirOpt, ForceOpt, JsonOpt, console, emit, handle_errors, setup_logging
from crosslayer.report import Report


def register(app: typer.Typer) -> None:
    app.command("flow")(flow_cmd)
    app.command("report")(report_cmd)
    app.command("stages")(stages_cmd)


@handle_errors
def flow_cmd(
    config: Path = typer.Argument(None, help="Flow TOML; the built-in default (LeNet-5 on MNIST) when omitted."),
    out: Path = typer.Option(Path("runs/flow"), "--out", "-o", help="Run directory."),
    seed: int = typer.Option(None, "--seed", help="Override [flow].seed."),
    device: str = typer.Option(None, "--device", help="Override [flow].device: auto, cpu, cuda, cuda:N."),
    model: str = typer.Option(None, "--model", "-m", help="Override [flow].model."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Override [flow].dataset."),
    data_dir: str = DataDirOpt,
    as_json: bool = JsonOpt,
    force: bool = ForceOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the cross-layer flow: every stage of CONFIG in order, one report. Re-running the same flow into
    the same --out resumes after its last finished stage."""
    setup_logging(verbose)
    from crosslayer.flow import load_flow_config, run_flow

    resolved = load_flow_config(config, {"seed": seed, "device": device, "model": model, "dataset": dataset,
                                         "data_dir": data_dir})

    def announce(name: str, rep: Report) -> None:
        acc = rep.metrics.get("test_accuracy")
        extra = f" test accuracy {acc:.4f}" if isinstance(acc, float) else ""
        console.print(f"[green]✓[/] {name} ({rep.seconds:.1f} s){extra}")

    try:
        run_flow(resolved, out, on_stage=announce, force=force)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: the stages that finished are kept in {str(out)!r}; the same "
                      "command resumes after them")
        raise typer.Exit(130) from None
    metrics = json.loads((out / "metrics.json").read_text())
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    else:
        console.print(f"report: {out / 'report.html'}  metrics: {out / 'metrics.json'}")


@handle_errors
def report_cmd(run_dir: Path = typer.Argument(..., help="A run directory written by `crosslayer flow`."),
               as_json: bool = JsonOpt) -> None:
    """Re-render RUN_DIR/report.html from the stage reports."""
    from crosslayer.flow import render_report
    from crosslayer.report import load_reports

    reports = load_reports(run_dir)
    path = render_report(run_dir, reports)
    if as_json:
        sys.stdout.write(json.dumps({r.stage: r.to_json()["metrics"] for r in reports}, indent=2) + "\n")
    else:
        console.print(f"report: {path}")


@handle_errors
def stages_cmd(as_json: bool = JsonOpt) -> None:
    """List the flow stages and their options."""
    import dataclasses

    from crosslayer.flow import available_stages

    info = {name: {"description": s.description,
                   "options": {f.name: repr(f.default) for f in dataclasses.fields(s.config_cls)}}
            for name, s in sorted(available_stages().items())}
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    emit({k: v["description"] for k, v in info.items()}, False, title="stages")
