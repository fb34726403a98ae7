"""Run the ``quantize`` stage on its own (the ``crosslayer quantize`` command): the model comes from
a run directory, or from a model name and a weights file; the output directory is a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crosslayer.flow import run_standalone
from crosslayer.quant.pipeline import QuantizeConfig
from crosslayer.report import Report

__all__ = ["run_quantize"]


def run_quantize(cfg: QuantizeConfig, out: str | Path, *, run_dir: str | Path | None = None,
                 flow_options: dict[str, Any] | None = None, force: bool = False) -> Report:
    """Quantize the model of ``run_dir`` (or of ``flow_options`` model + weights) into the run directory ``out``."""
    return run_standalone("quantize", cfg, out, run_dir=run_dir, options=flow_options or {}, force=force)
