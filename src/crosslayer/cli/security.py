"""``crosslayer attack``, ``crosslayer defend`` and ``crosslayer backdoor`` (thin shells over crosslayer.security)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib
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

ImagesOpt = typer.Option(1000, "--images", "-n", help="Number of test images (first N).")
SetOpt = typer.Option(None, "--set", help="Extra attack option key=value (TOML value), repeatable.")


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_cmd)
    app.command("defend")(defend_cmd)
    app.command("backdoor")(backdoor_cmd)


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    from crosslayer.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} must look like key=value")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def _save(out: Path | None, name: str, metrics: dict[str, Any]) -> None:
    if out is not None:
        from crosslayer.fileio import atomic_write_json

        atomic_write_json(out / f"{name}.json", metrics)


@handle_errors
def attack_cmd(
    attack: str = typer.Option("pgd", "--attack", "-a", help="fgsm, pgd, jsma, cw, hopskipjump, red or trisec."),
    eps: float = typer.Option(None, "--eps", help="Perturbation budget (fgsm, pgd)."),
    norm: str = typer.Option(None, "--norm", help="linf or l2 (pgd)."),
    steps: int = typer.Option(None, "--steps", help="Iterations (pgd, cw, trisec)."),
    run_dir: Path = RunDirArg, sets: list[str] = SetOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    stage: str = StageOpt, images: int = ImagesOpt, dataset: str = DatasetOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, out: Path = OutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Attack a trained classifier on test images: success rate, L0/L2/Linf, SSIM, queries."""
    setup_logging(False)
    from crosslayer.config import check_range
    from crosslayer.security import attack_config
    from crosslayer.security.api import attack as attack_verb

    check_range("--images", images, 1)
    opts = {k: v for k, v in {"eps": eps, "norm": norm, "steps": steps}.items() if v is not None}
    cfg = attack_config(attack, **opts, **_parse_sets(sets))
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device).context("attack")
    test = ctx.data.test
    res = attack_verb(ctx.model, cfg, test.images[:images], test.labels[:images], seed=seed)
    metrics = {"attack": res.attack, **res.metrics}
    _save(out, f"attack-{res.attack}", metrics)
    emit(metrics, as_json, title=f"{attack} on {len(res.adv)} images")


@handle_errors
def defend_cmd(
    defence: str = typer.Option("quantize", "--defence", help="quantize, learned-quantize, random-quantize, median, "
                                "lowpass, or adv-train (PGD adversarial training; needs --epochs)."),
    eps: float = typer.Option(0.2, "--eps", help="L-inf budget of the PGD evaluation attack."),
    steps: int = typer.Option(20, "--steps", help="PGD steps of the evaluation attack."),
    levels: int = typer.Option(2, "--levels", help="Quantization levels."),
    size: int = typer.Option(3, "--size", help="Filter size (median, lowpass)."),
    epochs: int = typer.Option(5, "--epochs", help="adv-train: epochs of PGD training (from the given weights)."),
    run_dir: Path = RunDirArg, model: str = ModelOpt, weights: Path = WeightsOpt, stage: str = StageOpt,
    images: int = typer.Option(500, "--images", "-n", help="Number of test images (first N)."),
    dataset: str = DatasetOpt, seed: int = SeedOpt, device: str = DeviceOpt,
    data_dir: str = DataDirOpt, out: Path = OutOpt, as_json: bool = JsonOpt,
) -> None:
    """Evaluate a defence against a non-adaptive AND an adaptive (BPDA / EOT) PGD attacker. learned-quantize
    learns its thresholds on the validation split, adv-train trains on the training split; the test images
    only measure."""
    setup_logging(False)
    from crosslayer.config import check_range, from_mapping
    from crosslayer.security import DefenceConfig, defend

    check_range("--images", images, 1)
    cfg = from_mapping(DefenceConfig, {"defence": defence, "levels": levels, "size": size, "epochs": epochs,
                                       "attack": {"eps": eps, "steps": steps}}, section="defend")
    ctx = model_source(run_dir, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device).context("defend")
    test = ctx.data.test
    res = defend(ctx.model, cfg, test.images[:images], test.labels[:images], data=ctx.data, seed=seed)
    metrics = res.metrics()
    if out is not None and defence == "adv-train":
        from crosslayer.fileio import save_torch

        save_torch(out / "adv_trained.state_dict.pt", res.model.state_dict())
        metrics["written"] = str(out / "adv_trained.state_dict.pt")
    _save(out, f"defend-{defence}", metrics)
    emit(metrics, as_json, title=f"defence {defence}, PGD-{steps} eps {eps:g}")


@handle_errors
def backdoor_cmd(
    rate: float = typer.Option(0.1, "--rate", help="Share of training images poisoned."),
    target: int = typer.Option(0, "--target", help="Backdoor target class."),
    patch: int = typer.Option(4, "--patch", help="Trigger patch side (pixels)."),
    epochs: int = typer.Option(4, "--epochs", help="Training epochs on the poisoned set."),
    prune_epochs: int = typer.Option(2, "--prune-epochs", help="Fine-tuning epochs after pruning."),
    run_dir: Path = typer.Argument(None, help="A run directory: its model's architecture and data (the weights are "
                                              "re-initialised: the attacker trains the model). Else --model."),
    model: str = typer.Option(None, "--model", "-m", help="Model to train on the poisoned set: a built-in name "
                                                          "(lenet5, the default) or a user factory file.py:factory "
                                                          "(code)."),
    dataset: str = DatasetOpt,
    train_limit: int = typer.Option(10000, "--train-limit", help="Training images used (0 = all)."),
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, out: Path = OutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """BadNets poisoning, then fine-pruning: attack success rate and clean accuracy before and after."""
    setup_logging(False)
    from crosslayer.config import from_mapping
    from crosslayer.security import BackdoorConfig, backdoor

    cfg = from_mapping(BackdoorConfig, {
        "badnets": {"rate": rate, "target": target, "patch": patch},
        "train": {"epochs": epochs, "lr": 0.002, "optimizer": "adam", "weight_decay": 0.0},
        "fine_prune": {"epochs": prune_epochs}}, section="backdoor")
    ctx = model_source(run_dir, model=model, dataset=dataset, data_dir=data_dir, seed=seed, device=device,
                       train_limit=train_limit).context(untrained=True)
    res = backdoor(ctx.model, cfg, ctx.data, seed=seed)
    metrics = res.metrics()
    _save(out, "backdoor", metrics)
    emit(metrics, as_json, title=f"BadNets {rate:.0%} poisoning + fine-pruning")
    if not as_json and out is not None:
        console.print(f"results: {out / 'backdoor.json'}")
