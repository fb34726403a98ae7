"""The three headline quantization measurements of the compression benchmark:
8-bit post-training quantization of weights and activations, 4-bit with quantization-aware
fine-tuning, and ternary (TWN) weights fine-tuned with the STE, each as a test-accuracy loss in
percentage points against the float model. Reused by ``benchmarks/quant.py`` and the compression
benchmark.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from crosslayer.config import Config, check_range, to_mapping
from crosslayer.data import DataSplits
from crosslayer.errors import ConfigError
from crosslayer.quant.pipeline import QuantizeConfig, quantize
from crosslayer.quant.storage import quantized_storage
from crosslayer.train import evaluate

__all__ = ["MeasureConfig", "quant_measurements"]


@dataclass(frozen=True, kw_only=True)
class MeasureConfig(Config):
    """Settings of the three measurements (defaults: the ones reported in docs/quant.md)."""

    ptq: QuantizeConfig = field(default_factory=lambda: QuantizeConfig(mode="ptq", weight_bits=8, act_bits=8))
    qat: QuantizeConfig = field(default_factory=lambda: QuantizeConfig(mode="qat", weight_bits=4, act_bits=4,
                                                                       qat_epochs=2, qat_lr=1e-4))
    ternary: QuantizeConfig = field(default_factory=lambda: QuantizeConfig(mode="ternary", act_bits=8, qat_epochs=2,
                                                                           qat_lr=3e-4))
    which: tuple[str, ...] = ("ptq8", "qat4", "ternary")

    def validate(self) -> None:
        for w in self.which:
            if w not in ("ptq8", "qat4", "ternary"):
                raise ConfigError(f"which contains {w!r}; allowed: ptq8, qat4, ternary")
        check_range("len(which)", len(self.which), 1)



def quant_measurements(model: nn.Module, data: DataSplits, *, seed: int = 0,
                       cfg: MeasureConfig | None = None) -> dict[str, Any]:
    """Test accuracy, loss (pp), compression ratio and seconds of each measurement; the model is not changed.

    Keys: ``baseline_accuracy``, and for each of ``ptq8``, ``qat4``, ``ternary``: ``<k>_accuracy``,
    ``<k>_accuracy_loss_pp``, ``<k>_compression_ratio``, ``<k>_seconds``, ``<k>_settings``.
    """
    cfg = cfg or MeasureConfig()
    base = evaluate(model, data.test).accuracy
    out: dict[str, Any] = {"baseline_accuracy": base}
    plans = {"ptq8": cfg.ptq, "qat4": cfg.qat, "ternary": cfg.ternary}
    for key in cfg.which:
        qc = dataclasses.replace(plans[key], sweep=False)
        t0 = time.perf_counter()
        q = quantize(model, qc, data, seed=seed).model
        seconds = time.perf_counter() - t0
        acc = evaluate(q, data.test).accuracy
        out.update({f"{key}_accuracy": acc, f"{key}_accuracy_loss_pp": 100.0 * (base - acc),
                    f"{key}_compression_ratio": quantized_storage(q).compression_ratio,
                    f"{key}_seconds": seconds,
                    f"{key}_settings": {k: v for k, v in to_mapping(qc).items() if not k.startswith("sweep")}})
    return out
