"""Run the ``quantize`` stage on its own (the ``crosslayer quantize`` command): the model comes from
a run directory's last checkpoint, or from a model name and a weights file; the output directory is
laid out like a flow run (config, metrics, report, checkpoint)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from crosslayer.config import from_mapping, load_toml, to_mapping
from crosslayer.errors import ConfigError
from crosslayer.fileio import atomic_write_json, ensure_writable_dir, save_torch
from crosslayer.flow import FlowConfig, build_context, load_run_model
from crosslayer.quant.pipeline import QuantizeConfig
from crosslayer.report import Report, write_html

__all__ = ["run_quantize"]


def _flow_for(run_dir: Path | None, options: dict[str, Any]) -> FlowConfig:
    if run_dir is None:
        if not options.get("weights"):
            raise ConfigError("nothing to quantize: give a RUN_DIR written by `crosslayer flow` / `crosslayer train`, "
                              "or --model with --weights")
        return from_mapping(FlowConfig, {**options, "stages": ["quantize"]}, section="flow")
    cfg_path = Path(run_dir) / "config.toml"
    raw = dict(load_toml(cfg_path).get("flow", {})) if cfg_path.is_file() else {}
    keep = {k: raw[k] for k in ("model", "dataset", "val_fraction", "train_limit", "test_limit") if k in raw}
    merged = {**options, **keep, "weights": "", "init_weights": "", "stages": ["quantize"]}
    for k in ("seed", "device", "data_dir"):
        if k in options:
            merged[k] = options[k]
    return from_mapping(FlowConfig, merged, section="flow")


def run_quantize(cfg: QuantizeConfig, out: str | Path, *, run_dir: str | Path | None = None,
                 flow_options: dict[str, Any] | None = None) -> Report:
    """Quantize the model of ``run_dir`` (or of ``flow_options`` model + weights) into the run directory ``out``."""
    from crosslayer.quant.stage import quantize_stage

    out_dir = ensure_writable_dir(out)
    src = Path(run_dir) if run_dir is not None else None
    flow = _flow_for(src, dict(flow_options or {}))
    ctx = build_context(out_dir, flow)
    if src is not None:
        ctx.model = load_run_model(src).to(ctx.device)
    t0 = time.perf_counter()
    result = quantize_stage(ctx, cfg)
    rep = result.report
    rep.stage, rep.seconds, rep.seed, rep.config = "quantize", time.perf_counter() - t0, flow.seed, to_mapping(cfg)
    if src is not None:
        rep.notes.append(f"model taken from run directory {str(src)!r}")
    assert result.model is not None
    save_torch(out_dir / "checkpoints" / "quantize.pt", result.model)
    save_torch(out_dir / "checkpoints" / "quantize.state_dict.pt", result.model.state_dict())
    rep.save(out_dir / "reports" / "quantize.json")
    atomic_write_json(out_dir / "reports" / "index.json", {"stages": ["quantize"]})
    atomic_write_json(out_dir / "metrics.json", {"flow": {**dataclasses.asdict(flow), "seconds": rep.seconds},
                                                 "quantize": {**rep.to_json()["metrics"], "seconds": rep.seconds}})
    write_html(out_dir / "report.html", [rep], title=f"crosslayer quantize: {flow.model} on {flow.dataset}")
    return rep
