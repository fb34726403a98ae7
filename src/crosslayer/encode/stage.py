"""Flow stages ``encode`` (the packed model file with its exact storage) and ``export`` (ONNX, checked in
ONNX Runtime, with a speed table): thin callers of :func:`~crosslayer.encode.api.pack` and
:func:`~crosslayer.encode.api.export_onnx`."""

from __future__ import annotations

from typing import Any

from crosslayer.encode.api import EncodeConfig, ExportConfig, export_onnx, is_int8, pack, unpack
from crosslayer.report import Report
from crosslayer.stage import PACKED_PATH, StageContext, StageResult, register_stage
from crosslayer.train import evaluate

__all__ = ["EncodeConfig", "ExportConfig"]

PARTS = ("values", "indices", "pointers", "codebook", "bias", "header")


@register_stage("encode", EncodeConfig, "pack the current model into a .xlm file with exact storage accounting")
def encode_stage(ctx: StageContext, cfg: EncodeConfig) -> StageResult:
    rep = Report("encode")
    path = ctx.stage_dir("encode") / "model.xlm"
    res = pack(ctx.model, cfg, path)
    acc_before = evaluate(ctx.model, ctx.data.test).accuracy
    acc_after = evaluate(unpack(path), ctx.data.test).accuracy
    size = path.stat().st_size
    rep.add_table("Storage per layer (bits)", ["layer", "format", *PARTS, "total"],
                  [[name, res.layer_formats.get(name, ""), *(parts.get(k, 0) for k in PARTS), sum(parts.values())]
                   for name, parts in res.layer_bits.items()])
    rep.metrics.update({"packed_bytes": size, "accounted_bytes": res.file_bytes,
                        "weight_bits_total": res.weight_bits, "compression_ratio": res.compression_ratio,
                        "file_compression_ratio": res.dense_fp32_bits / 8 / size,
                        "test_accuracy": acc_after, "roundtrip_accuracy_delta": acc_after - acc_before})
    rep.notes.append(f"packed file: {path} ({size} bytes, equal to the accounting: {size == res.file_bytes}); "
                     "compression ratio counts weight values, indices, pointers and codebooks against dense fp32 "
                     "weights")
    return StageResult(report=rep, artifacts={PACKED_PATH.name: str(path)})


@register_stage("export", ExportConfig, "export ONNX (float and int8), verify in ONNX Runtime, time it")
def export_stage(ctx: StageContext, cfg: ExportConfig) -> StageResult:
    rep = Report("export")
    out = ctx.stage_dir("export")
    test = ctx.data.test
    candidates = {"current": ctx.model}
    if "baseline" in ctx.models:
        candidates["baseline"] = ctx.models["baseline"]
    rows: list[list[Any]] = []
    timing_rows: list[list[Any]] = []
    for label, model in candidates.items():
        int8 = is_int8(model)
        fname = f"{label}_{'int8' if int8 else 'fp32'}.onnx"
        res = export_onnx(model, cfg, out / fname, test.images[:1], data=test)
        rows.append([fname, "int8 QDQ" if int8 else "fp32", res.file_bytes, res.agreement, res.accuracy])
        rep.metrics[f"{label}_onnx_top1_agreement"] = res.agreement
        rep.metrics[f"{label}_onnx_accuracy"] = res.accuracy
        timing_rows += [[label, runtime, t["latency_ms_b1"], t["throughput_b256"]] for runtime, t in res.timing.items()]
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
