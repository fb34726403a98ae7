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
    ModelSource,
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


def _load(src: ModelSource) -> tuple[Any, Any]:
    ctx = src.context()
    return ctx.model.eval(), ctx.data.test


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
    run: Path = RunDirArg, sets: list[str] = SetOpt, model: str = ModelOpt, weights: Path = WeightsOpt,
    stage: str = StageOpt, images: int = ImagesOpt, dataset: str = DatasetOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, out: Path = OutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Attack a trained classifier on test images: success rate, L0/L2/Linf, SSIM, queries."""
    setup_logging(False)
    from crosslayer.config import check_range
    from crosslayer.security import attack_config, run_attack

    check_range("--images", images, 1)
    opts = {k: v for k, v in {"eps": eps, "norm": norm, "steps": steps}.items() if v is not None}
    cfg = attack_config(attack, **opts, **_parse_sets(sets))
    net, test = _load(model_source(run, stage=stage, model=model, weights=weights, dataset=dataset,
                                   data_dir=data_dir, seed=seed, device=device))
    res = run_attack(net, test.images[:images], test.labels[:images], cfg, seed=seed)
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
    run: Path = RunDirArg, model: str = ModelOpt, weights: Path = WeightsOpt, stage: str = StageOpt,
    images: int = typer.Option(500, "--images", "-n", help="Number of test images (first N)."),
    dataset: str = DatasetOpt, seed: int = SeedOpt, device: str = DeviceOpt,
    data_dir: str = DataDirOpt, out: Path = OutOpt, as_json: bool = JsonOpt,
) -> None:
    """Evaluate a defence against a non-adaptive AND an adaptive (BPDA / EOT) PGD attacker."""
    setup_logging(False)
    from crosslayer.config import check_range
    from crosslayer.security import PGDConfig, evaluate_defence, run_attack
    from crosslayer.security.adv_training import adversarial_train
    from crosslayer.security.experiments import make_defence

    check_range("--images", images, 1)
    attack = PGDConfig(eps=eps, steps=steps)
    attack.validate()
    src = model_source(run, stage=stage, model=model, weights=weights, dataset=dataset, data_dir=data_dir,
                       seed=seed, device=device)
    ctx = src.context()
    net, test = ctx.model.eval(), ctx.data.test
    x, y = test.images[:images], test.labels[:images]
    if defence == "adv-train":
        import copy

        from crosslayer.train import TrainConfig

        before = run_attack(net, x, y, attack, seed=seed, with_ssim=False).metrics["robust_accuracy"]
        data = ctx.data
        robust = copy.deepcopy(net)
        adversarial_train(robust, data.train, data.val, TrainConfig(epochs=epochs, lr=0.001, optimizer="adam",
                          weight_decay=0.0), PGDConfig(eps=eps, steps=7), seed=seed, ramp_epochs=min(2.0, epochs / 2))
        # adversarial training hides no gradient: the white-box PGD attack is already the adaptive one
        after = run_attack(robust, x, y, attack, seed=seed, with_ssim=False).metrics
        metrics: dict[str, Any] = {"defence": defence, "robust_accuracy_before": before,
                                   "clean_accuracy_after": after["clean_accuracy"],
                                   "adaptive_robust_accuracy": after["robust_accuracy"]}
        if out is not None:
            from crosslayer.fileio import save_torch

            save_torch(out / "adv_trained.state_dict.pt", robust.state_dict())
    else:
        t = make_defence(defence, levels=levels, size=size, model=net, calib=test.subset(min(len(test), 2000)),
                         eps=eps, seed=seed)
        metrics = {"defence": defence, **evaluate_defence(net, t, x, y, attack, seed=seed)}
    _save(out, f"defend-{defence}", metrics)
    emit(metrics, as_json, title=f"defence {defence}, PGD-{steps} eps {eps:g}")


@handle_errors
def backdoor_cmd(
    rate: float = typer.Option(0.1, "--rate", help="Share of training images poisoned."),
    target: int = typer.Option(0, "--target", help="Backdoor target class."),
    patch: int = typer.Option(4, "--patch", help="Trigger patch side (pixels)."),
    epochs: int = typer.Option(4, "--epochs", help="Training epochs on the poisoned set."),
    prune_epochs: int = typer.Option(2, "--prune-epochs", help="Fine-tuning epochs after pruning."),
    model: str = typer.Option("lenet5", "--model", "-m", help="Model to train on the poisoned set: a built-in name "
                                                               "or a user factory file.py:factory (code)."),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="Dataset name or path (.npz, image folder)."),
    train_limit: int = typer.Option(10000, "--train-limit", help="Training images used (0 = all)."),
    seed: int = SeedOpt, device: str = DeviceOpt, data_dir: str = DataDirOpt, out: Path = OutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """BadNets poisoning, then fine-pruning: attack success rate and clean accuracy before and after."""
    setup_logging(False)
    from crosslayer.data import load_splits
    from crosslayer.device import resolve_device
    from crosslayer.models import build_model
    from crosslayer.security import BadNetsConfig, FinePruneConfig
    from crosslayer.security.experiments import backdoor_experiment
    from crosslayer.train import TrainConfig

    bad = BadNetsConfig(rate=rate, target=target, patch=patch)
    bad.validate()
    data = load_splits(dataset, data_dir, seed=seed, train_limit=train_limit or None)
    c, h, _ = data.input_shape
    net = build_model(model, num_classes=data.num_classes, in_channels=c, image_size=h).to(resolve_device(device))
    res = backdoor_experiment(net, data, bad, TrainConfig(epochs=epochs, lr=0.002, optimizer="adam",
                              weight_decay=0.0), FinePruneConfig(epochs=prune_epochs), seed=seed)
    metrics = res.metrics()
    _save(out, "backdoor", metrics)
    emit(metrics, as_json, title=f"BadNets {rate:.0%} poisoning + fine-pruning")
    if not as_json and out is not None:
        console.print(f"results: {out / 'backdoor.json'}")
