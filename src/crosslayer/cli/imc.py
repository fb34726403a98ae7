"""``crosslayer imc``: crossbar inference, variation-aware training and the crossbar cost of a model (thin shells
over :func:`crosslayer.imc.imc_simulate`, the ``imc_train`` stage and :func:`crosslayer.imc.cost.network_cost`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import (
    DataDirOpt,
    DatasetOpt,
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

imc_app = typer.Typer(help="In-memory computing: ReRAM crossbar non-idealities and variation-aware training.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(imc_app, name="imc")


_SPEC = typer.Option(None, "--spec", help="TOML file whose table (or [crossbar] table) sets CrossbarSpec fields.")
_SIGMA = typer.Option(None, "--sigma", help="Device-to-device variation sigma (overrides --spec).")
_VARIATION = typer.Option(None, "--variation", help="gaussian or lognormal (overrides --spec).")
_ADC = typer.Option(None, "--adc-bits", help="ADC bits, 0 = ideal (overrides --spec).")


def _crossbar(path: Path | None, sigma: float | None, variation: str | None, adc_bits: int | None) -> dict[str, Any]:
    """The ``[crossbar]`` table of --spec with the options given on the command line applied."""
    from crosslayer.config import load_toml
    from crosslayer.errors import ConfigError

    raw: dict[str, Any] = {}
    if path is not None:
        doc = load_toml(path)
        table = doc.get("crossbar", doc)
        if not isinstance(table, dict):
            raise ConfigError(f"--spec {str(path)!r}: [crossbar] must be a table")
        raw = dict(table)
    for key, val in (("d2d_sigma", sigma), ("variation", variation), ("adc_bits", adc_bits)):
        if val is not None:
            raw[key] = val
    return raw


@handle_errors
def simulate_cmd(run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
                 dataset: str = DatasetOpt, spec_file: Path = _SPEC, sigma: float = _SIGMA,
                 variation: str = _VARIATION, adc_bits: int = _ADC,
                 chips: int = typer.Option(3, "--chips", help="Chips (seeds) to simulate."),
                 test_limit: int = typer.Option(1000, "--test-limit", help="Evaluate on the first N test images "
                                                                           "(0 = all)."),
                 seed: int = SeedOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Test accuracy of a model programmed onto simulated crossbars (mean and std over chips)."""
    setup_logging(False)
    from crosslayer.config import check_range, from_mapping
    from crosslayer.imc import SimulateConfig, imc_simulate

    check_range("--chips", chips, 1)
    cfg = from_mapping(SimulateConfig, {"crossbar": _crossbar(spec_file, sigma, variation, adc_bits),
                                        "eval_limit": test_limit}, section="imc simulate")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device="cpu").context("imc simulate")
    res = imc_simulate(ctx.model, cfg, ctx.data, seeds=[seed * 1000 + i for i in range(chips)])
    spec = res.spec
    emit({"digital_accuracy": res.digital_accuracy, "crossbar_accuracy": res.accuracy,
          "crossbar_accuracy_std": res.accuracy_std, "chips": chips, "images": res.images, "sigma": spec.sigma,
          "variation": spec.variation, "adc_bits": spec.adc_bits, "per_chip": list(res.point.accuracies)}, as_json,
         title="crossbar inference")


@handle_errors
def train_cmd(run_dir: Path = RunDirArg, stage: str = StageOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
              dataset: str = DatasetOpt, spec_file: Path = _SPEC, sigma: float = _SIGMA, variation: str = _VARIATION,
              out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (the fine-tuned model, its "
                                                                "report); every other command accepts it."),
              force: bool = ForceOpt,
              epochs: int = typer.Option(1, help="Fine-tuning epochs."),
              lr: float = typer.Option(0.001, help="Learning rate (Adam)."),
              shift: int = typer.Option(0, "--shift", help="Random shift augmentation (pixels)."),
              rotate: float = typer.Option(0.0, "--rotate", help="Random rotation augmentation (degrees)."),
              scale: float = typer.Option(0.0, "--scale", help="Random scale augmentation (fraction)."),
              train_limit: int = typer.Option(10000, help="Training images (0 = all)."),
              seed: int = SeedOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Variation-aware fine-tuning (Long et al., DATE 2019); OUT becomes a run directory."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.imc import ImcTrainConfig

    cfg = from_mapping(ImcTrainConfig, {
        "crossbar": _crossbar(spec_file, sigma, variation, None),
        "training": {"epochs": epochs, "lr": lr, "augment_shift": shift, "augment_rotate": rotate,
                     "augment_scale": scale}}, section="imc_train")
    report = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                          seed=seed, device="cpu", train_limit=train_limit).run("imc_train", cfg, out, force=force)
    emit(report.metrics, as_json, title="variation-aware training")
    if not as_json:
        console.print(f"run directory: {out}  report: {out / 'report.html'}")


@handle_errors
def energy_cmd(run_dir: Path = RunDirArg, stage: str = StageOpt,
               model: str = typer.Option(None, "--model", "-m", help="Built-in model (lenet5, the default) or a "
                                                                     "user factory file.py:factory (code); no weights "
                                                                     "needed."),
               dataset: str = DatasetOpt, spec_file: Path = _SPEC, adc_bits: int = _ADC, data_dir: str = DataDirOpt,
               as_json: bool = JsonOpt) -> None:
    """Energy, area and latency per inference of a model on crossbar tiles (ISAAC unit figures)."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.imc import CrossbarSpec
    from crosslayer.imc.cost import layer_shapes, network_cost

    spec = from_mapping(CrossbarSpec, _crossbar(spec_file, None, None, adc_bits), section="crossbar")
    ctx = model_source(run_dir, stage=stage, model=model, dataset=dataset, data_dir=data_dir,
                       device="cpu").context(untrained=True)
    costs, totals = network_cost(layer_shapes(ctx.model, ctx.data.input_shape), spec)
    metrics: dict[str, Any] = dict(totals)
    metrics["layers"] = [c.as_dict() for c in costs]
    emit(metrics, as_json, title="crossbar cost per inference")


imc_app.command("simulate")(simulate_cmd)
imc_app.command("train")(train_cmd)
imc_app.command("energy")(energy_cmd)
