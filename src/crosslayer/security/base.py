"""What every attack shares: input checks, the normalisation wrapper, perturbation metrics and the result.

Attacks work on classifiers whose inputs live in ``[0, 1]`` (``INPUT_RANGE``); a model trained on
normalised inputs is wrapped in :class:`Normalized` so that epsilons keep their pixel meaning.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from crosslayer.errors import ConfigError, DataError, ModelError

__all__ = ["INPUT_RANGE", "NORMS", "AttackResult", "Normalized", "check_eps", "check_inputs", "frozen",
           "input_grad_only", "perturbation_norms", "ssim_scores", "summarize"]

INPUT_RANGE = (0.0, 1.0)
NORMS = ("linf", "l2")


class Normalized(nn.Module):
    """``model((x - mean) / std)``: lets attacks work in pixel space ``[0, 1]`` on a normalised model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: float | tuple[float, ...], std: float | tuple[float, ...]) -> None:
        super().__init__()
        stds = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if bool((stds <= 0).any()):
            raise ConfigError(f"Normalized: std = {std!r} must be positive")
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", stds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def check_norm(norm: str) -> str:
    n = norm.lower().replace("-", "").replace("_", "")
    n = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(n, n)
    if n not in NORMS:
        raise ConfigError(f"norm = {norm!r} is unknown; allowed: {', '.join(NORMS)}")
    return n


def check_eps(eps: float, norm: str = "linf", numel: int | None = None, *, name: str = "eps") -> None:
    """``eps`` must be >= 0 and no larger than the input range allows (1 for L-inf, sqrt(numel) for L2)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps):
        raise ConfigError(f"{name} = {eps!r} must be a finite number")
    lo, hi = INPUT_RANGE
    span = hi - lo
    limit = span if check_norm(norm) == "linf" else (span * math.sqrt(numel) if numel else math.inf)
    if eps < 0 or eps > limit:
        raise ConfigError(f"{name} = {eps!r} is out of range for the {norm} norm on inputs in [{lo:g}, {hi:g}]; "
                          f"allowed [0, {limit:g}]")


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Validate images, labels and that ``model`` is a classifier; return the number of classes."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise DataError(f"images must be a float tensor of shape (N, C, H, W), got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    lo, hi = INPUT_RANGE
    if x.numel() and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
        raise DataError(f"images must lie in [{lo:g}, {hi:g}] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]); "
                        "wrap a model trained on normalised inputs in crosslayer.security.Normalized")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise DataError(f"labels must be an integer tensor of shape ({len(x)},), got "
                        f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    with torch.no_grad():
        out = model(x[:1].to(_device(model)))
    if out.dim() != 2:
        raise ModelError(f"the model is not a classifier: its output has shape {tuple(out.shape)}, "
                         "expected 2-D (batch, classes)")
    classes = int(out.shape[1])
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"labels must lie in [0, {classes - 1}] for a {classes}-class model, "
                        f"got [{int(y.min())}, {int(y.max())}]")
    return classes


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def input_grad_only(model: nn.Module) -> Iterator[nn.Module]:
    """No parameter gradients (nor the activations saved for them) while attacking; mode untouched; restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters() if p.requires_grad]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while attacking; restores both on exit."""
    was_training = model.training
    model.eval()
    try:
        with input_grad_only(model):
            yield model
    finally:
        model.train(was_training)


def perturbation_norms(x: torch.Tensor, adv: torch.Tensor, tol: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per-image L0 (changed pixels), L2 and L-inf of ``adv - x``."""
    d = (adv - x).flatten(1)
    return {"l0": (d.abs() > tol).sum(1).float(), "l2": d.norm(dim=1), "linf": d.abs().amax(1)}


def ssim_scores(x: torch.Tensor, adv: torch.Tensor) -> np.ndarray:
    """Per-image SSIM (Wang et al., IEEE TIP 2004) with scikit-image, channels averaged."""
    from skimage.metrics import structural_similarity

    a = x.detach().cpu().numpy()
    b = adv.detach().cpu().numpy()
    out = np.empty(len(a))
    for i in range(len(a)):
        out[i] = structural_similarity(a[i], b[i], data_range=INPUT_RANGE[1] - INPUT_RANGE[0], channel_axis=0)
    return out


@dataclass
class AttackResult:
    """Adversarial images plus what the attack achieved.

    ``success``: per image, the attack's goal is met (prediction differs from the label, or equals the
    target) on an image the model classified correctly before. ``metrics`` averages norms and SSIM over
    successful images; ``success_rate`` is over the originally correct ones.
    """

    attack: str
    adv: torch.Tensor
    success: torch.Tensor
    clean_correct: torch.Tensor
    adv_pred: torch.Tensor
    queries: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    dev = _device(model)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def summarize(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, *,
              target: torch.Tensor | None = None, queries: torch.Tensor | None = None,
              with_ssim: bool = True) -> AttackResult:
    """Score ``adv`` against ``model``: success rate, robust accuracy, L0/L2/L-inf, SSIM, queries."""
    with frozen(model):
        clean = _predict(model, x)
        pred = _predict(model, adv)
    correct = clean == y.cpu()
    goal = pred == target.cpu() if target is not None else pred != y.cpu()
    success = goal & correct
    norms = perturbation_norms(x.cpu(), adv.detach().cpu())
    n_ok = int(correct.sum())
    m: dict[str, Any] = {
        "n": len(x), "clean_accuracy": float(correct.float().mean()) if len(x) else float("nan"),
        "robust_accuracy": float((pred == y.cpu()).float().mean()) if len(x) else float("nan"),
        "success_rate": float(success.sum()) / n_ok if n_ok else float("nan"),
    }
    sel = success if bool(success.any()) else torch.zeros_like(success)
    for k, v in norms.items():
        m[f"mean_{k}"] = float(v[sel].mean()) if bool(sel.any()) else float("nan")
    if with_ssim:
        m["mean_ssim"] = float(ssim_scores(x[sel], adv[sel]).mean()) if bool(sel.any()) else float("nan")
    if queries is not None:
        m["mean_queries"] = float(queries.float().mean())
    return AttackResult(name, adv.detach(), success, correct, pred, queries, m)
