"""``crosslayer imc``: crossbar inference, variation-aware training and the crossbar cost of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from crosslayer.cli.common import DataDirOpt, JsonOpt, SeedOpt, console, emit, handle_errors, setup_logging

imc_app = typer.Typer(help="In-memory computing: ReRAM crossbar non-idealities and variation-aware training.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(imc_app, name="imc")


_RUN = typer.Option(None, "--run", help="Run directory: use the model its last stage (or --stage) left behind.")
_STAGE = typer.Option(None, "--stage", help="With --run: the stage whose checkpoint to load.")
_MODEL = typer.Option("lenet5", "--model", "-m", help="Model name (with --weights) when no --run is given.")
_WEIGHTS = typer.Option(None, "--weights", help="State dict for --model (weights_only=True).")
_DATASET = typer.Option("mnist", "--dataset", "-d")
_SPEC = typer.Option(None, "--spec", help="TOML file whose table (or [crossbar] table) sets CrossbarSpec fields.")
_SIGMA = typer.Option(None, "--sigma", help="Device-to-device variation sigma (overrides --spec).")
_VARIATION = typer.Option(None, "--variation", help="gaussian or lognormal (overrides --spec).")
_ADC = typer.Option(None, "--adc-bits", help="ADC bits, 0 = ideal (overrides --spec).")
_LIMIT = typer.Option(1000, "--test-limit", help="Evaluate on the first N test images (0 = all).")


def _spec(path: Path | None, sigma: float | None, variation: str | None, adc_bits: int | None) -> Any:
    from crosslayer.config import from_mapping, load_toml
    from crosslayer.imc import CrossbarSpec

    raw: dict[str, Any] = {}
    if path is not None:
        doc = load_toml(path)
        raw = dict(doc.get("crossbar", doc))
    for key, val in (("d2d_sigma", sigma), ("variation", variation), ("adc_bits", adc_bits)):
        if val is not None:
            raw[key] = val
    return from_mapping(CrossbarSpec, raw, section="crossbar")


def _model(run: Path | None, stage: str | None, model: str, weights: Path | None, test: Any) -> Any:
    from crosslayer.errors import ConfigError
    from crosslayer.flow import load_run_model
    from crosslayer.models import build_model, load_weights

    if run is not None:
        return load_run_model(run, stage).cpu().eval()
    if weights is None:
        raise ConfigError("give --run RUN_DIR or --weights FILE.pt (with --model) for the model to simulate")
    c, h, _ = test.input_shape
    net = build_model(model, num_classes=test.num_classes, in_channels=c, image_size=h)
    load_weights(net, weights)
    return net.eval()


@handle_errors
def simulate_cmd(run: Path = _RUN, stage: str = _STAGE, model: str = _MODEL, weights: Path = _WEIGHTS,
                 dataset: str = _DATASET, spec_file: Path = _SPEC, sigma: float = _SIGMA, variation: str = _VARIATION,
                 adc_bits: int = _ADC, chips: int = typer.Option(3, "--chips", help="Chips (seeds) to simulate."),
                 test_limit: int = _LIMIT, seed: int = SeedOpt, data_dir: str = DataDirOpt,
                 as_json: bool = JsonOpt) -> None:
    """Test accuracy of a model programmed onto simulated crossbars (mean and std over chips)."""
    setup_logging(False)
    from crosslayer.config import check_range
    from crosslayer.data import load_dataset
    from crosslayer.imc.evaluation import SweepPoint, crossbar_accuracy
    from crosslayer.train import evaluate

    check_range("--chips", chips, 1)
    spec = _spec(spec_file, sigma, variation, adc_bits)
    test = load_dataset(dataset, "test", data_dir)
    test = test.subset(test_limit) if test_limit else test
    net = _model(run, stage, model, weights, test)
    cal = load_dataset(dataset, "train", data_dir).images[:256]
    accs = crossbar_accuracy(net, spec, test, seeds=[seed * 1000 + i for i in range(chips)], calibration=cal)
    pt = SweepPoint(spec.d2d_sigma, accs)
    emit({"digital_accuracy": evaluate(net, test).accuracy, "crossbar_accuracy": pt.mean,
          "crossbar_accuracy_std": pt.std, "chips": chips, "sigma": spec.sigma, "variation": spec.variation,
          "adc_bits": spec.adc_bits, "per_chip": list(accs)}, as_json, title="crossbar inference")


@handle_errors
def train_cmd(run: Path = _RUN, stage: str = _STAGE, model: str = _MODEL, weights: Path = _WEIGHTS,
              dataset: str = _DATASET, spec_file: Path = _SPEC, sigma: float = _SIGMA, variation: str = _VARIATION,
              out: Path = typer.Option(..., "--out", "-o", help="Where to write the fine-tuned state dict (.pt)."),
              epochs: int = typer.Option(1, help="Fine-tuning epochs."),
              lr: float = typer.Option(0.001, help="Learning rate (Adam)."),
              shift: int = typer.Option(0, "--shift", help="Random shift augmentation (pixels)."),
              rotate: float = typer.Option(0.0, "--rotate", help="Random rotation augmentation (degrees)."),
              scale: float = typer.Option(0.0, "--scale", help="Random scale augmentation (fraction)."),
              train_limit: int = typer.Option(10000, help="Training images (0 = all)."),
              seed: int = SeedOpt, data_dir: str = DataDirOpt, as_json: bool = JsonOpt) -> None:
    """Variation-aware fine-tuning (Long et al., DATE 2019); writes the state dict to --out."""
    setup_logging(False)
    from crosslayer.data import load_splits
    from crosslayer.fileio import save_torch
    from crosslayer.imc import AwareTrainConfig, train_variation_aware

    spec = _spec(spec_file, sigma, variation, None)
    data = load_splits(dataset, data_dir, train_limit=train_limit or None, seed=seed)
    net = _model(run, stage, model, weights, data.test)
    aware, res = train_variation_aware(net, data.train, data.val, spec, AwareTrainConfig(
        epochs=epochs, lr=lr, augment_shift=shift, augment_rotate=rotate, augment_scale=scale), seed=seed)
    save_torch(out, aware.state_dict())
    emit({"val_accuracy": res.history[-1]["val_accuracy"] if res.history else float("nan"),
          "train_seconds": res.train_seconds, "sigma": spec.sigma, "out": str(out)}, as_json,
         title="variation-aware training")
    if not as_json:
        console.print(f"state dict written to {out}")


@handle_errors
def energy_cmd(run: Path = _RUN, stage: str = _STAGE, model: str = typer.Option("lenet5", "--model", "-m"),
               dataset: str = _DATASET, spec_file: Path = _SPEC, adc_bits: int = _ADC, data_dir: str = DataDirOpt,
               as_json: bool = JsonOpt) -> None:
    """Energy, area and latency per inference of a model on crossbar tiles (ISAAC unit figures)."""
    setup_logging(False)
    from crosslayer.data import load_dataset
    from crosslayer.flow import load_run_model
    from crosslayer.imc.cost import layer_shapes, network_cost
    from crosslayer.models import build_model

    spec = _spec(spec_file, None, None, adc_bits)
    test = load_dataset(dataset, "test", data_dir)
    c, h, _ = test.input_shape
    net = load_run_model(run, stage).cpu() if run is not None else build_model(
        model, num_classes=test.num_classes, in_channels=c, image_size=h)
    costs, totals = network_cost(layer_shapes(net, test.input_shape), spec)
    metrics: dict[str, Any] = dict(totals)
    metrics["layers"] = [c.as_dict() for c in costs]
    emit(metrics, as_json, title="crossbar cost per inference")


imc_app.command("simulate")(simulate_cmd)
imc_app.command("train")(train_cmd)
imc_app.command("energy")(energy_cmd)
