"""``crosslayer hw``: cost a model on an accelerator (``hw cost``), list the presets (``hw presets``)."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    RunDirArg,
    StageOpt,
    WeightsOpt,
    console,
    emit,
    handle_errors,
    model_source,
    setup_logging,
)

hw_app = typer.Typer(help="Hardware model: energy, latency and dataflow of a model on an accelerator.",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(hw_app, name="hw")


@hw_app.command("presets")
@handle_errors
def presets_cmd(as_json: bool = JsonOpt) -> None:
    """List the built-in accelerator presets."""
    from crosslayer.hw.accelerator import load_accelerator, preset_names

    out = {}
    for name in preset_names():
        a = load_accelerator(name)
        out[name] = f"{a.kind} {a.rows}x{a.cols}, GLB {a.glb_bytes // 1024} kB, {a.clock_mhz:g} MHz, " \
                    f"dataflows {'/'.join(a.dataflows)}"
    emit(out, as_json, title="accelerator presets")


@hw_app.command("cost")
@handle_errors
def cost_cmd(
    run_dir: Path = RunDirArg, stage: str = StageOpt,
    model: str = typer.Option(None, "--model", "-m", help="lenet5 (the default), lenet300, vgg-small, resnet20, "
                                                          "mobilenetv2, or file.py:factory (code); weights optional."),
    weights: Path = WeightsOpt,
    run: Path = typer.Option(None, "--run", hidden=True, help="Same as RUN_DIR (older spelling)."),
    accelerator: str = typer.Option("eyeriss", "--accelerator", "-a", help="Preset (eyeriss, tpu) or TOML file."),
    dataflow: list[str] = typer.Option(None, "--dataflow", help="WS, OS, RS or IS (repeatable; default: all)."),
    objective: str = typer.Option("energy", "--objective", help="energy or latency."),
    skip: str = typer.Option("none", "--skip", help="Zero-skipping: none, weights, activations or both."),
    samples: int = typer.Option(64, "--samples", help="Test images used to measure activation sparsity."),
    dataset: str = DatasetOpt,
    data_dir: str = DataDirOpt,
    out: Path = typer.Option(None, "--out", "-o", help="Write the report JSON (with figures) here."),
    seed: int = typer.Option(0, "--seed", help="Unused by the deterministic cost model; kept for symmetry."),
    as_json: bool = JsonOpt,
) -> None:
    """Energy per level, latency and the best dataflow of MODEL on ACCELERATOR, layer by layer."""
    setup_logging(False)
    from crosslayer.config import check_range, from_mapping
    from crosslayer.errors import ConfigError
    from crosslayer.hw.accelerator import load_accelerator
    from crosslayer.hw.analysis import add_tables
    from crosslayer.hw.api import CostConfig, hardware_cost
    from crosslayer.hw.plots import dataflow_comparison_figure, layer_breakdown_figure, level_breakdown_figure
    from crosslayer.report import Report

    if run is not None and run_dir is not None:
        raise ConfigError("give the run directory once (RUN_DIR or --run)")
    run_dir = run_dir or run
    check_range("--samples", samples, 1)
    acc = load_accelerator(accelerator)
    cfg = from_mapping(CostConfig, {"dataflows": list(dataflow or ()), "objective": objective,
                                    "sparsity": {"skip": skip}}, section="hw cost")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device="cpu").context("hardware", untrained=True)
    mc = hardware_cost(ctx.model, acc, cfg, inputs=ctx.data.test.images[:samples])
    metrics = mc.metrics()
    if out is not None:
        rep = Report("hardware", metrics=dict(metrics), seed=seed)
        add_tables(rep, mc, None)
        rep.figures += [level_breakdown_figure({"model": mc.cost}), layer_breakdown_figure(mc.cost),
                        dataflow_comparison_figure(mc.cost, None)]
        rep.save(out)
    emit(metrics, as_json, title=f"{model or 'lenet5' if run_dir is None else run_dir} on {mc.accelerator.name}")
    if not as_json:
        for c in mc.layers:
            console.print(f"{c.layer:>10} {c.dataflow:>3}  energy {c.total_energy:12.4g}  cycles {c.cycles:9d}  "
                          f"util {c.utilization:6.3f}  bound {c.bound}")
