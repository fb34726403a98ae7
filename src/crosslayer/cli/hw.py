"""``crosslayer hw``: cost a model on an accelerator (``hw cost``), list the presets (``hw presets``)."""

from __future__ import annotations

from pathlib import Path

import typer

from crosslayer.cli.common import DataDirOpt, JsonOpt, console, emit, handle_errors, setup_logging

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
    model: str = typer.Option("lenet5", "--model", "-m", help="lenet5, lenet300, vgg-small, or file.py:factory."),
    weights: Path = typer.Option(None, "--weights", help="State dict to load (weights_only=True)."),
    run: Path = typer.Option(None, "--run", help="Run directory: cost the model its last stage left behind."),
    accelerator: str = typer.Option("eyeriss", "--accelerator", "-a", help="Preset (eyeriss, tpu) or TOML file."),
    dataflow: list[str] = typer.Option(None, "--dataflow", help="WS, OS, RS or IS (repeatable; default: all)."),
    objective: str = typer.Option("energy", "--objective", help="energy or latency."),
    skip: str = typer.Option("none", "--skip", help="Zero-skipping: none, weights, activations or both."),
    samples: int = typer.Option(64, "--samples", help="Test images used to measure activation sparsity."),
    dataset: str = typer.Option("mnist", "--dataset", "-d"),
    data_dir: str = DataDirOpt,
    out: Path = typer.Option(None, "--out", "-o", help="Write the report JSON (with figures) here."),
    seed: int = typer.Option(0, "--seed", help="Unused by the deterministic cost model; kept for symmetry."),
    as_json: bool = JsonOpt,
) -> None:
    """Energy per level, latency and the best dataflow of MODEL on ACCELERATOR, layer by layer."""
    setup_logging(False)
    from crosslayer.data import load_dataset
    from crosslayer.errors import ConfigError
    from crosslayer.flow import load_run_model
    from crosslayer.hw.accelerator import load_accelerator
    from crosslayer.hw.analysis import add_tables, analyse_model, summary_metrics
    from crosslayer.hw.plots import dataflow_comparison_figure, layer_breakdown_figure, level_breakdown_figure
    from crosslayer.hw.sparsity import SparsityConfig
    from crosslayer.models import build_model, load_weights
    from crosslayer.report import Report

    if objective not in ("energy", "latency"):
        raise ConfigError(f"--objective = {objective!r} is not allowed; choose 'energy' or 'latency'")
    if samples < 1:
        raise ConfigError(f"--samples = {samples} must be at least 1")
    acc = load_accelerator(accelerator)
    sparsity = SparsityConfig(skip=skip)  # type: ignore[arg-type]
    test = load_dataset(dataset, "test", data_dir)
    if run is not None:
        net = load_run_model(run)
    else:
        c, h, _ = test.input_shape
        net = build_model(model, num_classes=test.num_classes, in_channels=c, image_size=h)
        if weights is not None:
            load_weights(net, weights)
    net = net.cpu()
    mc = analyse_model(net, test.images[:samples], acc, dataflows=dataflow or None,
                       objective=objective, sparsity=sparsity)  # type: ignore[arg-type]
    metrics = {"accelerator": acc.name, "macs": mc.cost.macs, **summary_metrics(mc.cost)}
    if out is not None:
        rep = Report("hardware", metrics=dict(metrics), seed=seed)
        add_tables(rep, mc, None)
        rep.figures += [level_breakdown_figure({"model": mc.cost}), layer_breakdown_figure(mc.cost),
                        dataflow_comparison_figure(mc.cost, None)]
        rep.save(out)
    emit(metrics, as_json, title=f"{model if run is None else run} on {acc.name}")
    if not as_json:
        for c in mc.cost.best_per_layer():
            console.print(f"{c.layer:>10} {c.dataflow:>3}  energy {c.total_energy:12.4g}  cycles {c.cycles:9d}  "
                          f"util {c.utilization:6.3f}  bound {c.bound}")
