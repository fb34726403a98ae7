"""The one training / evaluation loop every stage reuses.

Seeded and deterministic on CPU (same seed, same accuracy to the last digit), SGD with momentum and
a cosine or step learning-rate schedule, best-on-validation checkpointing, rich progress bars, and
hooks so that later stages (pruning masks, quantization-aware training, adversarial training) run
through the same loop instead of writing their own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from crosslayer.checkpoint import state_digest
from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range, to_mapping
from crosslayer.data.datasets import ImageDataset, cache_dir
from crosslayer.data.split import Batches
from crosslayer.errors import DataError
from crosslayer.fileio import save_torch

__all__ = ["EvalResult", "TrainConfig", "TrainResult", "evaluate", "fit", "fit_cached", "keep_pruned_zeros",
           "load_cached", "predict", "progress", "random_affine", "random_shift", "seed_everything", "store_cached",
           "within_budget"]

log = logging.getLogger(__name__)

StepHook = Callable[[nn.Module], None]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Hyper-parameters of one training run."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = 5
    gamma: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    augment_shift: int = 0
    augment_rotate: float = 0.0     # degrees, random rotation in [-r, r]
    augment_scale: float = 0.0      # random isotropic scale in [1 - s, 1 + s]
    augment_flip: bool = False      # random horizontal flip (p = 0.5); not for digits or text

    def validate(self) -> None:
        check_range("epochs", self.epochs, 0, MAX_EPOCHS)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("step_size", self.step_size, 1)
        check_range("augment_shift", self.augment_shift, 0, 8)
        check_range("augment_rotate", self.augment_rotate, 0.0, 45.0)
        check_range("augment_scale", self.augment_scale, 0.0, 0.5)



@dataclass
class EvalResult:
    accuracy: float
    loss: float
    n: int


@dataclass
class TrainResult:
    best_val_accuracy: float
    best_epoch: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    cached: bool = False
    finished: bool = True   # False when ``max_epochs`` stopped a resumable training early


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(transient: bool = True) -> Progress:
    """The toolkit's progress bar style (silent when stdout is not a terminal)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=transient, disable=os.environ.get("CROSSLAYER_NO_PROGRESS") == "1")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for ``images`` in eval mode, batched."""
    was_training = model.training
    model.eval()
    dev = _device_of(model)
    outs = [model(images[i:i + batch_size].to(dev)).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, batch_size: int = 1000) -> EvalResult:
    """Top-1 accuracy (fraction 0-1) and mean cross-entropy on ``data``; an empty set is a ``DataError``
    (an accuracy of nothing is not a number to report)."""
    if len(data) == 0:
        raise DataError(f"{data.name} {data.split} set is empty: nothing to evaluate (check the dataset, "
                        "--test-limit and the validation fraction)")
    logits = predict(model, data.images, batch_size)
    loss = float(nn.functional.cross_entropy(logits, data.labels))
    acc = int((logits.argmax(1) == data.labels).sum()) / len(data)
    return EvalResult(accuracy=acc, loss=loss, n=len(data))


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def within_budget(loss_pp: float, budget_pp: float) -> bool:
    """``loss_pp <= budget_pp`` up to rounding: a loss of exactly one image in a thousand is 0.1 pp, not
    0.10000000000000009 pp, so it meets a 0.1 pp budget."""
    return loss_pp <= budget_pp + 1e-6


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (step // max(1, cfg.step_size))
    return cfg.lr


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift] (zero fill).

    The classic data augmentation for small MNIST training sets (Simard et al., ICDAR 2003 use elastic
    distortions; translations alone recover most of the gain). Vectorised with one gather per batch.
    """
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)).to(x.device)
    cols = (dx[:, None] + torch.arange(w)).to(x.device)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: torch.Tensor, enabled: bool, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (``x`` unchanged, and no random draw, when disabled).

    The standard augmentation of natural-image and clothing datasets (Krizhevsky et al., NeurIPS 2012; He et al.,
    CVPR 2016 for CIFAR); wrong for digits and text, where a mirror changes the class, so it is off by default.
    """
    if not enabled:
        return x
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    if not bool(flip.any()):
        return x
    out = x.clone()
    sel = flip.to(x.device)
    out[sel] = x[sel].flip(-1)
    return out


def random_affine(x: torch.Tensor, max_degrees: float, max_scale: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by a random angle in [-max_degrees, max_degrees] and scale it by a random factor in
    [1 - max_scale, 1 + max_scale] about its centre (bilinear, zero fill).

    The affine distortions of Simard et al., ICDAR 2003, which with translations lift a small-data MNIST
    model by a few tenths of a point. One ``grid_sample`` per batch.
    """
    if max_degrees <= 0 and max_scale <= 0:
        return x
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _save_resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, batches: Batches,
                 aug_gen: torch.Generator, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
    """Everything an interrupted ``fit`` needs to continue exactly where it stopped (tensors and JSON only)."""
    save_torch(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "best_state": best_state if best_state is not None else {},
                      "batch_rng": batches._gen.get_state(), "aug_rng": aug_gen.get_state(),
                      "torch_rng": torch.get_rng_state(), "meta": json.dumps(state)})


def keep_pruned_zeros(model: nn.Module) -> StepHook | None:
    """An ``on_step`` hook for :func:`fit` that keeps the weights that are exactly zero now (pruned) at zero
    after every optimizer step; None when no weight tensor (dim > 1) holds a zero."""
    masks = {id(p): p.detach() != 0 for p in model.parameters() if p.dim() > 1 and bool((p == 0).any())}
    if not masks:
        return None

    def keep_zeros(m: nn.Module) -> None:
        with torch.no_grad():
            for p in m.parameters():
                mask = masks.get(id(p))
                if mask is not None:
                    p.mul_(mask)

    return keep_zeros


def fit(model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: TrainConfig, *, seed: int = 0,
        on_step: StepHook | None = None, loss_fn: LossFn | None = None, desc: str = "train",
        keep_best: bool = True, resume: Path | None = None, max_epochs: int | None = None) -> TrainResult:
    """Train ``model`` in place; with ``keep_best`` it ends holding the weights of the best validation epoch.

    ``on_step(model)`` runs after every optimizer step (e.g. to re-apply pruning masks);
    ``loss_fn(model, x, y)`` replaces cross-entropy (e.g. adversarial training).
    Resumable training: with ``resume`` (a file), the state after every epoch is saved there and a later
    call continues from it, giving the same weights as one uninterrupted run; ``max_epochs`` ends this call
    after that many epochs (``finished`` is then False and the model holds the last epoch's weights).
    """
    aug_gen = seed_everything(seed)
    dev = _device_of(model)
    batches = Batches(train.images, train.labels, cfg.batch_size, shuffle=True, seed=seed)
    opt = _optimizer(model, cfg)
    loss_fn = loss_fn or _ce_loss
    best_acc, best_epoch, best_state = -1.0, -1, None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    if cfg.epochs == 0:
        acc = evaluate(model, val).accuracy
        return TrainResult(acc, 0, 0.0, [])
    start, before = 0, 0.0
    signature = json.dumps({"cfg": to_mapping(cfg), "seed": seed, "n": len(train), "batches": len(batches)},
                           sort_keys=True)
    if resume is not None and Path(resume).is_file():
        blob = torch.load(resume, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta"])
        if meta["signature"] == signature:
            model.load_state_dict(blob["model"])
            opt.load_state_dict(blob["optimizer"])
            batches._gen.set_state(blob["batch_rng"])
            aug_gen.set_state(blob["aug_rng"])
            torch.set_rng_state(blob["torch_rng"])
            best_state = blob["best_state"] or None
            start, before, history = meta["epoch"], meta["seconds"], meta["history"]
            best_acc, best_epoch = meta["best_acc"], meta["best_epoch"]
            log.info("%s: resuming after epoch %d from %s", desc, start, resume)
        else:
            log.warning("ignoring resume file %s: it belongs to another training", resume)
    stop = cfg.epochs if max_epochs is None else min(cfg.epochs, start + max_epochs)
    with progress() as bar:
        task = bar.add_task(desc, total=cfg.epochs * len(batches), completed=start * len(batches), info="")
        for epoch in range(start, stop):
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, epoch, cfg.epochs)
            model.train()
            total, n = 0.0, 0
            for x, y in batches:
                x = random_affine(x, cfg.augment_rotate, cfg.augment_scale, aug_gen)
                x = random_shift(x, cfg.augment_shift, aug_gen)
                x = random_hflip(x, cfg.augment_flip, aug_gen)
                x, y = x.to(dev), y.to(dev)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model, x, y)
                loss.backward()
                opt.step()
                if on_step is not None:
                    on_step(model)
                total += float(loss.detach()) * len(y)
                n += len(y)
                bar.advance(task)
            ev = evaluate(model, val)
            history.append({"epoch": epoch + 1, "train_loss": total / max(1, n), "val_accuracy": ev.accuracy,
                            "val_loss": ev.loss, "lr": opt.param_groups[0]["lr"]})
            bar.update(task, info=f"epoch {epoch + 1} val {ev.accuracy:.4f}")
            log.info("%s epoch %d: loss %.4f val acc %.4f", desc, epoch + 1, total / max(1, n), ev.accuracy)
            if ev.accuracy > best_acc:
                best_acc, best_epoch = ev.accuracy, epoch + 1
                if keep_best:
                    best_state = copy.deepcopy(model.state_dict())
            if resume is not None:
                _save_resume(Path(resume), model, opt, batches, aug_gen, {
                    "signature": signature, "epoch": epoch + 1, "seconds": before + time.perf_counter() - t0,
                    "history": history, "best_acc": best_acc, "best_epoch": best_epoch}, best_state)
    seconds = before + time.perf_counter() - t0
    if stop < cfg.epochs:
        return TrainResult(best_acc, best_epoch, seconds, history, finished=False)
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(best_acc, best_epoch, seconds, history)


def _key_fields(cfg: TrainConfig) -> dict[str, Any]:
    """The config as it enters the cache key; options added later are left out at their neutral default,
    so trainings cached before they existed stay valid."""
    late = {"augment_rotate": 0.0, "augment_scale": 0.0, "augment_flip": False}
    return {k: v for k, v in to_mapping(cfg).items() if not (k in late and v == late[k])}


def _cache_key(model_name: str, model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: TrainConfig,
               seed: int) -> str:
    payload = json.dumps({
        "model": model_name, "arch": repr(model), "init": state_digest(model), "train": train.fingerprint(),
        "val": val.fingerprint(), "cfg": _key_fields(cfg), "seed": seed, "torch": torch.__version__, "v": 2,
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_cached(path: Path, model: nn.Module, what: str = "trained model") -> dict[str, Any] | None:
    """Load the weights of the training cache entry ``path`` into ``model`` (read as data, ``weights_only``) and
    return its metadata; None when there is no entry. A stale or corrupt entry is logged and ignored (the caller
    trains afresh), never trusted. The one cache format of the project's trainings."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        meta = json.loads(blob["meta"])
        log.info("reusing cached %s %s", what, path)
        return dict(meta)
    except Exception as exc:
        log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
        return None


def store_cached(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write ``model``'s weights (on the CPU) and ``meta`` (JSON) as the cache entry ``path``, atomically; a
    cache that cannot be written is logged, not fatal."""
    try:
        save_torch(path, {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                          "meta": json.dumps(dict(meta))})
    except OSError as exc:
        log.warning("could not write the training cache %s (%s)", path, exc)


def fit_cached(model_name: str, model: nn.Module, train: ImageDataset, val: ImageDataset, cfg: TrainConfig, *,
               seed: int = 0, cache: Path | None = None, desc: str = "train",
               max_epochs: int | None = None) -> TrainResult:
    """``fit`` with a cache: the same model, starting weights, data, hyper-parameters and seed reuse the trained
    weights. The starting weights are part of the key (a digest of ``model``'s state when called), so two
    callers that initialise the model differently (another RNG state, pretrained weights) never share an entry:
    seed the RNG before building the model (``seed_everything``) to share one.

    With ``max_epochs``, a long training runs in resumable chunks: each call trains at most that many more
    epochs (its progress kept beside the cache entry) and only the finished training enters the cache.
    """
    root = (cache or cache_dir()) / "trained"
    key = _cache_key(model_name, model, train, val, cfg, seed)
    path = root / f"{key}.pt"
    meta = load_cached(path, model, "trained model")
    if meta is not None:
        return TrainResult(meta["best_val_accuracy"], meta["best_epoch"], meta["train_seconds"], meta["history"],
                           cached=True)
    partial = root / f"{key}.partial.pt" if max_epochs is not None else None
    result = fit(model, train, val, cfg, seed=seed, desc=desc, resume=partial, max_epochs=max_epochs)
    if not result.finished:
        return result
    store_cached(path, model, {"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
                               "train_seconds": result.train_seconds, "history": result.history})
    if partial is not None:
        partial.unlink(missing_ok=True)
    return result


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Parameter count and the share of exactly-zero weights."""
    params = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {"params": params, "zero_fraction": zeros / max(1, params)}
