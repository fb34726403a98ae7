"""``crosslayer memory``: voltage-scaled weight memories (MATIC): BER / energy curves, accuracy against
voltage over sampled chips, and memory-adaptive training for one chip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import DataDirOpt, DeviceOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging

memory_app = typer.Typer(help="Approximate weight memories: SRAM voltage scaling, bit errors, memory-adaptive "
                              "training (MATIC).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")


_CURVE = typer.Option("kc705b-28nm-probit", "--curve",
                      help="Built-in BER curve (kc705b-28nm, kc705b-28nm-probit) or a CSV of 'voltage, ber' rows.")
_NOMINAL = typer.Option(0.0, "--nominal", help="Nominal supply in volts (0 = the curve's own).")
_VOLTAGES = typer.Option("", "--voltages", help="Comma-separated voltages (default: the curve's grid).")
_MODE = typer.Option("curve", "--mode", help="How failing cells read: curve (its own), stuck, stuck0, stuck1, flip.")
_RUN = typer.Argument(None, help="A run directory; its last model (the quantized one after a full flow) is used.")
_MODEL = typer.Option("lenet5", "--model", "-m", help="Model name or file.py:factory (with --weights).")
_WEIGHTS = typer.Option(None, "--weights", help="Trained state dict (weights_only=True).")
_DATASET = typer.Option("mnist", "--dataset", "-d")


def _floats(text: str, what: str) -> tuple[float, ...]:
    from crosslayer.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what} must be a comma-separated list of numbers, got {text!r}") from exc


@handle_errors
def curve_cmd(curve: str = _CURVE, nominal: float = _NOMINAL, voltages: str = _VOLTAGES,
              leakage_share: float = typer.Option(0.0, "--leakage-share", help="Leakage share of the access energy "
                                                                                "at nominal (0 = CV^2 only)."),
              as_json: bool = JsonOpt) -> None:
    """BER and energy per access (relative to nominal) of a curve at each voltage."""
    setup_logging(False)
    from crosslayer.hw.voltage import SramVoltageModel
    from crosslayer.memory.curves import check_voltage, resolve_curve

    c = resolve_curve(curve, nominal_v=nominal or None)
    vs = _floats(voltages, "--voltages") or c.default_grid()
    for v in vs:
        check_voltage(v, "--voltages[]")
    vm = SramVoltageModel(nominal_v=c.nominal_v, leakage_share=leakage_share)
    rows = [{"voltage": v, "ber": c.ber(v), "read_energy": vm.read_energy_ratio(v),
             "leakage_power": vm.leakage_power_ratio(v), "access_energy": vm.access_energy_ratio(v)} for v in vs]
    if as_json:
        emit({"curve": c.name, "node": c.node, "source": c.source, "nominal_v": c.nominal_v,
              "fault_mode": c.fault_mode, "points": rows}, True)
        return
    from rich.table import Table

    table = Table(title=f"{c.name}: {c.node} (nominal {c.nominal_v:g} V, fault mode {c.fault_mode})")
    for col in ("voltage V", "BER", "read energy", "leakage power", "energy / access"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['voltage']:g}", f"{r['ber']:.3g}", f"{r['read_energy']:.3f}", f"{r['leakage_power']:.3f}",
                      f"{r['access_energy']:.3f}")
    from rich.console import Console

    Console().print(table)
    console.print(f"source: {c.source}")


@handle_errors
def sweep_cmd(run_dir: Path = _RUN, out: Path = typer.Option(..., "--out", "-o", help="Output run directory."),
              model: str = _MODEL, weights: Path = _WEIGHTS, dataset: str = _DATASET, curve: str = _CURVE,
              nominal: float = _NOMINAL, voltages: str = _VOLTAGES, mode: str = _MODE,
              chips: int = typer.Option(3, "--chips", help="Sampled chips."),
              budget: float = typer.Option(1.0, "--budget", help="Accuracy budget (pp) against fault-free."),
              adapt: bool = typer.Option(False, "--adapt/--no-adapt",
                                         help="Also memory-adaptive training below the conventional voltage."),
              epochs: int = typer.Option(1, "--epochs", help="Memory-adaptive training epochs per chip."),
              lr: float = typer.Option(0.0001, "--lr", help="Memory-adaptive training learning rate (Adam)."),
              test_limit: int = typer.Option(2000, "--test-limit", help="Test images (0 = all)."),
              leakage_share: float = typer.Option(0.0, "--leakage-share"),
              accelerator: str = typer.Option("eyeriss", "--accelerator"),
              seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt,
              as_json: bool = JsonOpt) -> None:
    """Accuracy vs weight-memory voltage over sampled chips and the lowest voltage within the budget
    (the ``memory`` flow stage on one model); writes a run directory with the report."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.flow import run_standalone
    from crosslayer.memory.stage import MemoryConfig

    raw: dict[str, Any] = {"curve": curve, "nominal_voltage": nominal,
                           "voltages": list(_floats(voltages, "--voltages")), "fault_mode": mode, "chips": chips,
                           "budget_pp": budget, "adapt": adapt, "adapt_epochs": epochs, "adapt_lr": lr,
                           "test_limit": test_limit, "leakage_share": leakage_share, "accelerator": accelerator}
    cfg = from_mapping(MemoryConfig, raw, section="memory")
    rep = run_standalone("memory", cfg, out, run_dir=run_dir, options={
        "model": model, "weights": str(weights) if weights else "", "dataset": dataset, "seed": seed,
        "device": device, "data_dir": data_dir or ""})
    emit(rep.metrics, as_json, title="memory")
    if not as_json:
        console.print(f"report: {out / 'report.html'}")


@handle_errors
def train_cmd(run_dir: Path = _RUN, model: str = _MODEL, weights: Path = _WEIGHTS, dataset: str = _DATASET,
              out: Path = typer.Option(..., "--out", "-o", help="Where to write the adapted state dict (.pt)."),
              voltage: float = typer.Option(..., "--voltage", help="Weight-memory supply (V) to adapt to."),
              chip: int = typer.Option(0, "--chip", help="Which sampled chip (its seed)."),
              curve: str = _CURVE, nominal: float = _NOMINAL, mode: str = _MODE,
              epochs: int = typer.Option(1, "--epochs"), lr: float = typer.Option(0.0001, "--lr"),
              train_limit: int = typer.Option(10000, "--train-limit", help="Training images (0 = all)."),
              test_limit: int = typer.Option(2000, "--test-limit", help="Test images (0 = all)."),
              seed: int = SeedOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Memory-adaptive training (MATIC) for one chip at one voltage; writes the state dict to --out and
    prints the chip's test accuracy before and after."""
    setup_logging(False)
    from crosslayer.config import check_range
    from crosslayer.data import load_splits
    from crosslayer.errors import ConfigError
    from crosslayer.fileio import save_torch
    from crosslayer.flow import load_run_model
    from crosslayer.memory.adapt import AdaptConfig
    from crosslayer.memory.api import adapt_to_chip
    from crosslayer.memory.curves import check_voltage, resolve_curve
    from crosslayer.models import build_model, load_weights

    check_range("--chip", chip, 0)  # option errors before any data is loaded
    check_voltage(voltage, "--voltage")
    c = resolve_curve(curve, nominal_v=nominal or None, fault_mode=None if mode == "curve" else mode)  # type: ignore[arg-type]
    data = load_splits(dataset, data_dir, train_limit=train_limit or None, test_limit=test_limit or None, seed=seed)
    if run_dir is not None:
        net = load_run_model(run_dir).cpu().eval()
    elif weights is None:
        raise ConfigError("give a RUN_DIR or --weights FILE.pt (with --model) for the model to adapt")
    else:
        ch, h, _ = data.input_shape
        net = build_model(model, num_classes=data.num_classes, in_channels=ch, image_size=h)
        load_weights(net, weights)
        net.eval()
    res = adapt_to_chip(net, c, voltage, data, AdaptConfig(epochs=epochs, lr=lr), chip=chip, seed=seed)
    save_torch(out, res.model.state_dict())
    emit({"voltage": res.voltage, "ber": res.ber, "chip": chip, "faulty_bits": res.faulty_bits,
          "test_accuracy_before": res.test_accuracy_before, "test_accuracy_after": res.test_accuracy_after,
          "best_epoch": res.best_epoch, "train_seconds": res.train_seconds, "out": str(out)}, as_json,
         title="memory-adaptive training")


memory_app.command("curve")(curve_cmd)
memory_app.command("sweep")(sweep_cmd)
memory_app.command("train")(train_cmd)
