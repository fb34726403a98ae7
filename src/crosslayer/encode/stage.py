"""Flow stages ``encode`` (the packed model file with its exact storage) and ``export`` (ONNX, checked in
ONNX Runtime, with a speed table)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crosslayer.config import Config, check_range
from crosslayer.encode.onnx_export import onnx_model
from crosslayer.encode.packfile import unpack_model, write_packed
from crosslayer.encode.speed import ort_runner, time_runner, torch_runner
from crosslayer.fileio import atomic_write_bytes
from crosslayer.quant.layers import iter_quant_layers
from crosslayer.report import Report
from crosslayer.stage import StageContext, StageResult, register_stage
from crosslayer.train import evaluate, predict

__all__ = ["EncodeConfig", "ExportConfig"]


@dataclass(frozen=True, kw_only=True)
class EncodeConfig(Config):
    """Relative-index widths (Deep Compression: 8 bits for conv, 5 for fc)."""

    conv_index_bits: int = 8
    fc_index_bits: int = 5

    def validate(self) -> None:
        check_range("conv_index_bits", self.conv_index_bits, 1, 16)
        check_range("fc_index_bits", self.fc_index_bits, 1, 16)


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    """Which models to export and whether to time them."""

    speed: bool = True
    repeats: int = 3

    def validate(self) -> None:
        check_range("repeats", self.repeats, 1, 100)


@register_stage("encode", EncodeConfig, "pack the current model into a .xlm file with exact storage accounting")
def encode_stage(ctx: StageContext, cfg: EncodeConfig) -> StageResult:
    rep = Report("encode")
    path = ctx.stage_dir("encode") / "model.xlm"
    model = ctx.model.cpu().eval()
    acct = write_packed(path, model, conv_index_bits=cfg.conv_index_bits, fc_index_bits=cfg.fc_index_bits)
    restored = unpack_model(path.read_bytes())
    acc_before = evaluate(model, ctx.data.test).accuracy
    acc_after = evaluate(restored, ctx.data.test).accuracy
    n_weights = sum(int(np.prod(m.weight.shape)) for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                            torch.nn.Linear)))
    dense_bits = 32 * n_weights
    rows = []
    for name, parts in acct["layers"].items():
        rows.append([name, parts.get("values", 0), parts.get("indices", 0), parts.get("pointers", 0),
                     parts.get("codebook", 0), parts.get("bias", 0), parts.get("header", 0), sum(parts.values())])
    rep.add_table("Storage per layer (bits)", ["layer", "values", "indices", "pointers", "codebook", "bias",
                                               "header", "total"], rows)
    weight_bits = sum(p.get("values", 0) + p.get("indices", 0) + p.get("pointers", 0) + p.get("codebook", 0)
                      for p in acct["layers"].values())
    rep.metrics.update({"packed_bytes": path.stat().st_size, "accounted_bytes": acct["bytes"],
                        "weight_bits_total": weight_bits, "compression_ratio": dense_bits / max(1, weight_bits),
                        "file_compression_ratio": dense_bits / 8 / path.stat().st_size,
                        "test_accuracy": acc_after, "roundtrip_accuracy_delta": acc_after - acc_before})
    rep.notes.append(f"packed file: {path} ({path.stat().st_size} bytes, equal to the accounting: "
                     f"{path.stat().st_size == acct['bytes']}); compression ratio counts weight values, indices, "
                     "pointers and codebooks against dense fp32 weights")
    return StageResult(report=rep, artifacts={"packed_path": str(path)})


@register_stage("export", ExportConfig, "export ONNX (float and int8), verify in ONNX Runtime, time it")
def export_stage(ctx: StageContext, cfg: ExportConfig) -> StageResult:
    rep = Report("export")
    out = ctx.stage_dir("export")
    test = ctx.data.test
    x = test.images.numpy()
    input_shape = tuple(int(d) for d in test.images.shape[1:])
    candidates = {"current": ctx.model.cpu().eval()}
    if "baseline" in ctx.models:
        candidates["baseline"] = ctx.models["baseline"].cpu().eval()
    rows, timing_rows = [], []
    for label, model in candidates.items():
        quantized = any(True for _ in iter_quant_layers(model))
        proto = onnx_model(model, input_shape)
        data = proto.SerializeToString()
        fname = f"{label}_{'int8' if quantized else 'fp32'}.onnx"
        atomic_write_bytes(out / fname, data)
        run = ort_runner(data)
        ort_pred = np.concatenate([run(x[i:i + 1000]) for i in range(0, len(x), 1000)]).argmax(1)
        torch_pred = predict(model, test.images).argmax(1).numpy()
        agree = float((ort_pred == torch_pred).mean())
        acc = float((ort_pred == test.labels.numpy()).mean())
        rows.append([fname, "int8 QDQ" if quantized else "fp32", len(data), agree, acc])
        rep.metrics[f"{label}_onnx_top1_agreement"] = agree
        rep.metrics[f"{label}_onnx_accuracy"] = acc
        if cfg.speed:
            for runtime, runner in (("PyTorch", torch_runner(model)), ("ONNX Runtime", run)):
                t = time_runner(runner, x, repeats=cfg.repeats)
                timing_rows.append([label, runtime, t["latency_ms_b1"], t["throughput_b256"]])
    rep.add_table("ONNX exports (checked in ONNX Runtime)", ["file", "type", "bytes", "top-1 agreement with PyTorch",
                                                             "test accuracy"], rows)
    if timing_rows:
        rep.add_table("Speed on this machine", ["model", "runtime", "latency batch 1 (ms)",
                                                "throughput batch 256 (img/s)"], timing_rows)
        base = [r for r in timing_rows if r[0] == "baseline" and r[1] == "PyTorch"]
        if base:
            best = max(timing_rows, key=lambda r: r[3] if r[0] == "current" else 0)
            rep.metrics["best_throughput_ratio"] = best[3] / base[0][3]
            rep.metrics["best_variant"] = f"{best[0]} / {best[1]}"
    rep.metrics["test_accuracy"] = rep.metrics.get("current_onnx_accuracy")
    return StageResult(report=rep)
