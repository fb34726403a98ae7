"""``crosslayer flow``, ``crosslayer report`` and ``crosslayer stages``."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import DataDirOpt, ForceOpt, JsonOpt, console, handle_errors, setup_logging
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


def _type_name(tp: Any) -> str:
    """A type hint as a reader writes it: ``int``, ``tuple[float, ...]``, ``'pgd' | 'fgsm'``, ``int | None``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{inner}]" if args else name
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _options(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` of every option of a config dataclass; a nested config's options are named
    ``section.option`` (with the defaults of the parent's default section); a field without a default has
    default ``"required"``."""
    hints = typing.get_type_hints(cls)
    rows: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if defaults is not None:
            default: Any = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            rows += _options(tp, f"{prefix}{f.name}.", default if dataclasses.is_dataclass(default) else None)
            continue
        rows.append((f"{prefix}{f.name}", _type_name(tp), list(default) if isinstance(default, tuple) else default))
    return rows


@handle_errors
def stages_cmd(name: str = typer.Argument(None, help="Show only this stage."), as_json: bool = JsonOpt) -> None:
    """List the flow stages and their options (type and default of each; nested sections as section.option)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from crosslayer.errors import ConfigError
    from crosslayer.flow import available_stages

    stages = available_stages()
    if name is not None and name not in stages:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(sorted(stages))}")
    chosen = {name: stages[name]} if name else dict(sorted(stages.items()))
    options = {n: _options(s.config_cls) for n, s in chosen.items()}
    if as_json:
        info = {n: {"description": s.description,
                    "options": {o: {"type": t, "default": d} for o, t, d in options[n]}} for n, s in chosen.items()}
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
        return
    out = Console()
    for n, s in chosen.items():
        table = Table(title=escape(f"[{n}]  {s.description}"), title_justify="left")
        for col in ("option", "type", "default"):
            table.add_column(col, overflow="fold")
        for opt, tp, default in options[n]:
            table.add_row(escape(opt), escape(tp), escape(json.dumps(default, default=str)))
        if not options[n]:
            table.add_row("(no options)", "", "")
        out.print(table)
