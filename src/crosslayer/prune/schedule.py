"""The iterative prune / fine-tune schedule (Han et al., NIPS 2015; survey Sec. IV-B, Fig. 3 step 1).

Each step prunes to the next target (unstructured: overall weight sparsity with one of the three
magnitude schemes; structured: the fraction of channels removed from every prunable group, relative
to the original width), fine-tunes a few epochs at a reduced learning rate with the masks re-applied
after every optimizer step, and evaluates on validation. The schedule continues while the validation
accuracy loss against the unpruned model stays within ``budget_pp`` percentage points and keeps the
last point within budget. Every step is recorded.

Acceptance rule. With the default ``stop_confidence = 0.5`` a step is kept when its observed validation
loss is within the budget (the paper's rule). On a small validation set one image is already 0.1 pp, so
that rule stops on noise; with ``stop_confidence = c > 0.5`` the schedule stops only when the validation
images show, at one-sided confidence ``c``, that the loss exceeds the budget::

    loss - z_c * SE <= budget

``SE`` the paired standard error of the accuracy difference on the same validation images
(:func:`crosslayer.stats.paired_loss`). Each step records its loss, ``SE`` and the decision.

After each completed step the state (kept model, masks, history) is written atomically to
``state_path``; a new :class:`IterativePruner` with the same model, data, config and seed resumes
from the last completed step and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from crosslayer.checkpoint import state_digest
from crosslayer.config import MAX_BATCH, MAX_EPOCHS, Config, check_range, to_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.fileio import save_torch
from crosslayer.prune.masks import (
    SCHEMES,
    Masks,
    Scheme,
    apply_masks,
    layer_sparsity,
    magnitude_masks,
    mask_sparsity,
    prunable_weights,
)
from crosslayer.prune.structured import Importance, count_macs, kept_channels, prunable_groups, prune_groups
from crosslayer.stats import one_sided_z, paired_loss
from crosslayer.train import TrainConfig, evaluate, fit, predict, progress, within_budget

__all__ = ["IterativePruner", "PruneResult", "ScheduleConfig", "rebuild_structure"]

log = logging.getLogger(__name__)
_STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(Config):
    """How to prune iteratively.

    ``targets``: increasing overall sparsities (unstructured) or channel fractions removed per group
    (``structured``), each in ``[0, 1)``. ``budget_pp``: allowed validation accuracy loss in
    percentage points. ``layers``: restrict pruning to these module names (empty: all Conv2d/Linear).
    ``augment_shift``: random translation (pixels) during fine-tuning, as in the baseline's training.
    ``stop_confidence``: one-sided confidence in [0.5, 1) with which the validation images must show a loss
    beyond the budget before the schedule stops (0.5: the observed loss decides; see the module docstring).
    ``round_to`` (structured): keep channel counts multiples of it (see ``kept_channels``).
    ``finetune_limit``: fine-tune on the first N training images (0: all; the validation split is unchanged).
    """

    scheme: Scheme = "class-blind"
    targets: tuple[float, ...] = (0.6, 0.8, 0.9, 0.93, 0.95)
    budget_pp: float = 0.1
    finetune_epochs: int = 2
    finetune_lr: float = 0.001
    optimizer: Literal["sgd", "adam"] = "adam"
    batch_size: int = 64
    weight_decay: float = 0.0
    layers: tuple[str, ...] = ()
    structured: bool = False
    importance: Importance = "l1"
    augment_shift: int = 0
    stop_confidence: float = 0.5
    round_to: int = 1
    finetune_limit: int = 0

    def validate(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme = {self.scheme!r} is not allowed; choose one of {', '.join(SCHEMES)}")
        if not self.targets:
            raise ConfigError("targets is empty; give at least one sparsity in [0, 1)")
        for i, t in enumerate(self.targets):
            check_range(f"targets[{i}]", t, 0.0, 1.0, hi_open=True)
        if any(b <= a for a, b in zip(self.targets, self.targets[1:], strict=False)):
            raise ConfigError(f"targets = {list(self.targets)} must be strictly increasing")
        check_range("budget_pp", self.budget_pp, 0.0, 100.0)
        check_range("finetune_epochs", self.finetune_epochs, 0, MAX_EPOCHS)
        check_range("finetune_lr", self.finetune_lr, 0.0, lo_open=True)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("stop_confidence", self.stop_confidence, 0.5, 1.0, hi_open=True)
        check_range("round_to", self.round_to, 1, 1024)
        check_range("finetune_limit", self.finetune_limit, 0)
        self.train_config()  # checks the fine-tuning's augmentation where it is used
        if self.importance not in ("l1", "l2"):
            raise ConfigError(f"importance = {self.importance!r} is not allowed; choose 'l1' or 'l2'")

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.finetune_epochs, batch_size=self.batch_size, lr=self.finetune_lr,
                           optimizer=self.optimizer, weight_decay=self.weight_decay, schedule="cosine",
                           augment_shift=self.augment_shift)


@dataclass
class PruneResult:
    """What :func:`crosslayer.prune.prune` returns: the pruned model, its masks, and (for the schedule) every
    step (step 0 = unpruned) with the one kept (the last within budget)."""

    model: nn.Module
    masks: Masks
    history: list[dict[str, Any]]
    kept_step: int
    stop_reason: str
    resumed_from: int = 0
    channels: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> dict[str, Any]:
        """The schedule step that was kept (one-shot pruning has no steps)."""
        if not self.history:
            raise ConfigError("one-shot pruning has no schedule steps")
        return self.history[self.kept_step]

    @property
    def sparsity(self) -> float:
        """Share of zeros among the pruned layers' weights."""
        return mask_sparsity(self.masks) if self.masks else 0.0

    @property
    def layer_sparsity(self) -> dict[str, float]:
        return layer_sparsity(self.masks)


def rebuild_structure(base: nn.Module, channels: dict[str, int], example_input: torch.Tensor,
                      layers: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``base`` with each channel group cut to ``channels[key]`` (to load a saved state dict)."""
    model = copy.deepcopy(base)
    if channels:
        prune_groups(model, prunable_groups(model, example_input, layers or None), channels)
    return model


class IterativePruner:
    """State of one iterative pruning run over ``model`` (not modified: the pruner works on copies)."""

    def __init__(self, model: nn.Module, data: DataSplits, cfg: ScheduleConfig, *, seed: int = 0,
                 state_path: str | Path | None = None) -> None:
        cfg.validate()
        self.base, self.data, self.cfg, self.seed = model, data, cfg, seed
        self.state_path = Path(state_path) if state_path is not None else None
        self.example = data.train.images[:2]
        if cfg.structured:
            groups = prunable_groups(model, self.example, cfg.layers or None)
            self.original_channels = {g.key: g.size for g in groups}
        else:
            prunable_weights(model, cfg.layers or None)  # raises early on a bad layer name
            self.original_channels = {}
        self.z = one_sided_z(cfg.stop_confidence)
        self.base_val_correct = self._val_correct(model)
        self.params0 = sum(p.numel() for p in model.parameters())
        self.fingerprint = hashlib.sha256(json.dumps({
            "cfg": to_mapping(cfg), "seed": seed, "model": state_digest(model), "arch": repr(model),
            "train": data.train.fingerprint(), "val": data.val.fingerprint(), "test": data.test.fingerprint(),
            "v": _STATE_VERSION}, sort_keys=True).encode()).hexdigest()[:20]

    # -- state -------------------------------------------------------------------------------
    def _save(self, model: nn.Module, masks: Masks, channels: dict[str, int], history: list[dict[str, Any]],
              done: str) -> None:
        if self.state_path is None:
            return
        save_torch(self.state_path, {
            "version": _STATE_VERSION, "fingerprint": self.fingerprint, "history": json.dumps(history),
            "done": done, "channels": channels, "masks": {k: v.cpu() for k, v in masks.items()},
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})

    def _load(self) -> tuple[nn.Module, Masks, dict[str, int], list[dict[str, Any]], str] | None:
        if self.state_path is None or not self.state_path.is_file():
            return None
        try:
            st = torch.load(self.state_path, map_location="cpu", weights_only=True)
            if st.get("fingerprint") != self.fingerprint:
                log.warning("ignoring %s: it belongs to another model, data, config or seed", self.state_path)
                return None
            channels = dict(st["channels"])
            model = rebuild_structure(self.base, channels, self.example, self.cfg.layers)
            model.load_state_dict(st["state_dict"])
            return model, dict(st["masks"]), channels, json.loads(st["history"]), str(st["done"])
        except Exception as exc:  # a corrupt state file is never trusted: start again
            log.warning("ignoring unreadable pruning state %s (%s)", self.state_path, exc)
            return None

    # -- one step ----------------------------------------------------------------------------
    def _val_correct(self, model: nn.Module) -> torch.Tensor:
        return predict(model, self.data.val.images).argmax(1) == self.data.val.labels

    def _record(self, step: int, target: float, model: nn.Module, masks: Masks, base: dict[str, Any] | None,
                seconds: float, lam: float | None = None) -> dict[str, Any]:
        val_correct = self._val_correct(model)
        val = int(val_correct.sum()) / len(val_correct)
        _, se = paired_loss(self.base_val_correct, val_correct)
        test = evaluate(model, self.data.test).accuracy
        params = sum(p.numel() for p in model.parameters())
        if self.cfg.structured:
            sparsity = 1.0 - params / self.params0
            per_layer = {n: 1.0 - p.numel() / q.numel() for (n, p), q in
                         zip(model.named_parameters(), self.base.parameters(), strict=True) if n.endswith("weight")}
        else:
            sparsity, per_layer = mask_sparsity(masks), layer_sparsity(masks)
        b_val = base["val_accuracy"] if base else val
        b_test = base["test_accuracy"] if base else test
        lower_pp = 100.0 * (b_val - val - self.z * se)  # the observed loss less the confidence margin
        return {"step": step, "target": target, "sparsity": sparsity, "layer_sparsity": per_layer,
                "lambda": lam, "params": params, "macs": count_macs(model, self.example),
                "nonzero_macs": count_macs(model, self.example, nonzero=True),
                "val_accuracy": val, "test_accuracy": test, "val_loss_pp": 100.0 * (b_val - val),
                "test_loss_pp": 100.0 * (b_test - test), "val_loss_se_pp": 100.0 * se,
                "val_loss_lower_pp": lower_pp, "within_budget": within_budget(lower_pp, self.cfg.budget_pp),
                "seconds": seconds}

    def _step(self, model: nn.Module, masks: Masks, channels: dict[str, int], step: int,
              target: float) -> tuple[nn.Module, Masks, dict[str, int], float | None]:
        cand = copy.deepcopy(model)
        lam: float | None = None
        if self.cfg.structured:
            counts = {k: kept_channels(n, target, self.cfg.round_to) for k, n in self.original_channels.items()}
            groups = prunable_groups(cand, self.example, self.cfg.layers or None)
            prune_groups(cand, groups, {g.key: min(g.size, counts[g.key]) for g in groups if g.key in counts},
                         self.cfg.importance)
            channels = {g.key: g.size for g in groups}
            new_masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in prunable_weights(cand).items()}
        else:
            new_masks, lam = magnitude_masks(prunable_weights(cand, self.cfg.layers or None), self.cfg.scheme, target,
                                             masks or None)
            apply_masks(cand, new_masks)
        if self.cfg.finetune_epochs > 0:
            def hook(m: nn.Module) -> None:
                apply_masks(m, new_masks)

            train = self.data.train.subset(self.cfg.finetune_limit) if self.cfg.finetune_limit else self.data.train
            fit(cand, train, self.data.val, self.cfg.train_config(), seed=self.seed + step,
                on_step=None if self.cfg.structured else hook, desc=f"fine-tune step {step}")
        if not self.cfg.structured:
            apply_masks(cand, new_masks)
        return cand, new_masks, channels, lam

    # -- the loop ----------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> PruneResult:
        """Run (or resume) the schedule; ``max_steps`` stops after that many new steps (to split a run)."""
        loaded = self._load()
        resumed_from = 0
        if loaded is not None:
            model, masks, channels, history, done = loaded
            resumed_from = len(history) - 1
            log.info("resuming pruning from step %d", resumed_from)
        else:
            model, channels, done = copy.deepcopy(self.base), dict(self.original_channels), ""
            masks = {k: (p.detach() != 0) if not self.cfg.structured else torch.ones_like(p, dtype=torch.bool)
                     for k, p in prunable_weights(model, self.cfg.layers or None).items()}
            history = [self._record(0, 0.0, model, masks, None, 0.0)]
            self._save(model, masks, channels, history, done)
        new_steps = 0
        with progress() as bar:
            task = bar.add_task("prune", total=len(self.cfg.targets), completed=len(history) - 1, info="")
            while not done:
                step = len(history)
                if step > len(self.cfg.targets):
                    done = "all targets reached within budget"
                    break
                if max_steps is not None and new_steps >= max_steps:
                    break
                target = self.cfg.targets[step - 1]
                t0 = time.perf_counter()
                cand, cmasks, cchan, lam = self._step(model, masks, channels, step, target)
                rec = self._record(step, target, cand, cmasks, history[0], time.perf_counter() - t0, lam)
                history.append(rec)
                new_steps += 1
                bar.update(task, advance=1, info=f"sparsity {rec['sparsity']:.3f} val {rec['val_accuracy']:.4f}")
                log.info("prune step %d: sparsity %.4f val %.4f (loss %.2f pp)", step, rec["sparsity"],
                         rec["val_accuracy"], rec["val_loss_pp"])
                if rec["within_budget"]:
                    model, masks, channels = cand, cmasks, cchan
                    if step == len(self.cfg.targets):
                        done = "all targets reached within budget"
                else:
                    done = (f"step {step} (target {target:g}) lost {rec['val_loss_pp']:.2f} pp > budget "
                            f"{self.cfg.budget_pp:g} pp")
                    if self.z > 0:
                        done += (f" with {self.cfg.stop_confidence:g} confidence (lower bound "
                                 f"{rec['val_loss_lower_pp']:.2f} pp)")
                self._save(model, masks, channels, history, done)
        kept = max(h["step"] for h in history if h["within_budget"])
        return PruneResult(model=model, masks=masks, history=history, kept_step=kept,
                            stop_reason=done or "stopped after max_steps", resumed_from=resumed_from,
                            channels=channels)
