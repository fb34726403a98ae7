"""``crosslayer search``: the hardware-aware co-design search, as a flow (CONFIG.toml, or the built-in co-design
flow) or on a trained model (a RUN_DIR, or --model with --weights)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    StageOpt,
    WeightsOpt,
    console,
    emit,
    handle_errors,
    model_source,
    setup_logging,
)


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


@handle_errors
def search_cmd(
    source: Path = typer.Argument(None, help="CONFIG.toml (a flow whose stages include 'search'; its \\[search] "
                                             "section holds the options) or a RUN_DIR whose model to search on. "
                                             "Omitted: the built-in co-design flow (flows/codesign.toml), or --model "
                                             "with --weights."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (the study lives in stages/search/study.db "
                                                      "unless --storage)."),
    trials: int = typer.Option(None, "--trials", "-n", help="Trials in the study (all states); a resumed or shared "
                                                            "study runs only the missing ones."),
    storage: str = typer.Option(None, "--storage", help="Study storage: sqlite:///path.db or "
                                                        "postgresql://user:password@host:port/db (shared between "
                                                        "machines)."),
    study: str = typer.Option(None, "--study", help="Study name in the storage."),
    workers: int = typer.Option(None, "--workers", "-w", help="Local worker processes, one torch thread each."),
    sampler: str = typer.Option(None, "--sampler", help="tpe (multi-objective TPE), nsga2, random or grid."),
    objectives: str = typer.Option(None, "--objectives", help="Comma list of accuracy, energy, latency, size."),
    accelerator: str = typer.Option(None, "--accelerator", "-a", help="Accelerator preset (eyeriss, tpu) or TOML."),
    budget: float = typer.Option(None, "--budget", help="Accuracy budget (pp) of the reported point."),
    trial_epochs: int = typer.Option(None, "--trial-epochs", help="Fine-tuning epochs per trial (0: none)."),
    final_points: int = typer.Option(None, "--final-points", help="Pareto points fine-tuned in full and tested "
                                                                  "(0: none, e.g. on machines that only add trials)."),
    final_epochs: int = typer.Option(None, "--final-epochs", help="Fine-tuning epochs of each final point."),
    stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt, dataset: str = DatasetOpt,
    data_dir: str = DataDirOpt,
    train_limit: int = typer.Option(None, "--train-limit", help="Use only the first N training images (quick runs)."),
    test_limit: int = typer.Option(None, "--test-limit", help="Use only the first N test images (quick runs)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (sampler, fine-tuning); default the flow's."),
    device: str = DeviceOpt, as_json: bool = JsonOpt, force: bool = ForceOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Search per-layer pruning, bit widths and approximate multipliers with the accelerator's dataflow, against
    accuracy, energy, latency and size; finish the Pareto set and report it."""
    setup_logging(verbose)
    from crosslayer.config import from_mapping, to_mapping
    from crosslayer.errors import ConfigError
    from crosslayer.explore.search import SearchConfig
    from crosslayer.flow import ResolvedFlow, load_flow_config, run_flow

    over: dict[str, Any] = {"trials": trials, "storage": storage, "study": study, "workers": workers,
                            "sampler": sampler, "objectives": _csv(objectives), "accelerator": accelerator,
                            "budget_pp": budget, "trial_epochs": trial_epochs, "final_points": final_points,
                            "final_epochs": final_epochs}
    over = {k: v for k, v in over.items() if v is not None}

    def configured(base: SearchConfig) -> SearchConfig:
        return from_mapping(SearchConfig, {**to_mapping(base), **over}, section="search")

    is_config = source is not None and source.suffix == ".toml"
    if source is not None and not is_config and not source.is_dir():
        raise ConfigError(f"{str(source)!r} is neither a flow TOML file nor a run directory")
    if is_config or (source is None and weights is None):
        flow_over = {"seed": seed, "device": None if device == "auto" else device, "model": model,
                     "dataset": dataset, "data_dir": data_dir, "train_limit": train_limit, "test_limit": test_limit}
        resolved = load_flow_config(source if is_config else _codesign_flow(), flow_over)
        if "search" not in resolved.flow.stages:
            raise ConfigError(f"{str(source)!r} does not run the 'search' stage; add it to [flow].stages")
        cfgs = dict(resolved.stage_configs)
        cfgs["search"] = configured(cfgs["search"])
        reports = run_flow(ResolvedFlow(resolved.flow, cfgs), out, force=force)
        metrics = next(r.metrics for r in reports if r.stage == "search")
    else:
        src = model_source(source, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                           seed=seed, device=device, train_limit=train_limit, test_limit=test_limit)
        metrics = src.run("search", configured(SearchConfig()), out, force=force).metrics
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2, default=str) + "\n")
        return
    emit(metrics, False, title="search")
    console.print(f"report: {out / 'report.html'}")


def _codesign_flow() -> Path:
    return Path(__file__).resolve().parents[1] / "flows" / "codesign.toml"
