"""The two foundation stages: ``baseline`` (train, reuse a cached training, or load weights) and
``evaluate`` (test accuracy and size of the current model)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from crosslayer.config import Config
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import TrainConfig, evaluate, fit, fit_cached, model_summary

__all__ = ["BaselineConfig", "EvaluateConfig"]


@dataclass(frozen=True, kw_only=True)
class BaselineConfig(TrainConfig):
    """Training hyper-parameters of the baseline, plus whether to reuse a cached training."""

    use_cache: bool = True


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig(Config):
    """No options: evaluates the current model on the test set."""


@register_stage("baseline", BaselineConfig, "train the model (or reuse a cached training / given weights)",
                needs_model=False, provides_model=True)
def baseline_stage(ctx: StageContext, cfg: BaselineConfig) -> StageResult:
    rep = Report("baseline")
    if ctx.flow.weights:
        rep.notes.append(f"weights loaded from {ctx.flow.weights}; no training")
        train_seconds, cached, history = 0.0, False, []
    else:
        t0 = time.perf_counter()
        train_cfg = TrainConfig(**{k: getattr(cfg, k) for k in TrainConfig.__dataclass_fields__})
        if cfg.use_cache:
            res = fit_cached(ctx.flow.model, ctx.model, ctx.data.train, ctx.data.val, train_cfg, seed=ctx.seed,
                             desc="baseline")
        else:
            res = fit(ctx.model, ctx.data.train, ctx.data.val, train_cfg, seed=ctx.seed, desc="baseline")
        train_seconds = res.train_seconds if not res.cached else time.perf_counter() - t0
        cached, history = res.cached, res.history
        if cached:
            rep.notes.append(f"reused a cached training (originally {res.train_seconds:.1f} s)")
    test = evaluate(ctx.model, ctx.data.test)
    val = evaluate(ctx.model, ctx.data.val)
    rep.metrics.update({"test_accuracy": test.accuracy, "val_accuracy": val.accuracy, "test_loss": test.loss,
                        **model_summary(ctx.model), "train_seconds": train_seconds, "cached": cached,
                        "train_samples": len(ctx.data.train), "test_samples": len(ctx.data.test)})
    rep.headline.update({"test_accuracy": test.accuracy, "model_bytes": 4.0 * rep.metrics["params"]})
    if history:
        from crosslayer.viz import line_plot

        ep = [h["epoch"] for h in history]
        rep.figures.append(line_plot({"validation accuracy": (ep, [h["val_accuracy"] for h in history])},
                                     title="Baseline training", xlabel="epoch", ylabel="accuracy"))
        rep.add_table("Training history", ["epoch", "train loss", "val accuracy", "lr"],
                      [[h["epoch"], h["train_loss"], h["val_accuracy"], h["lr"]] for h in history])
    return StageResult(report=rep, model=ctx.model, publish={"baseline": ctx.model})


@register_stage("evaluate", EvaluateConfig, "test accuracy and size of the current model")
def evaluate_stage(ctx: StageContext, cfg: EvaluateConfig) -> StageResult:
    rep = Report("evaluate")
    t0 = time.perf_counter()
    res = evaluate(ctx.model, ctx.data.test)
    seconds = time.perf_counter() - t0
    rep.metrics.update({"test_accuracy": res.accuracy, "test_loss": res.loss, **model_summary(ctx.model),
                        "images_per_second": res.n / max(seconds, 1e-9)})
    rep.headline["test_accuracy"] = res.accuracy
    return StageResult(report=rep)
