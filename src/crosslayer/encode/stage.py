"""Flow stages ``encode`` (the packed model file with its exact storage) and ``export`` (ONNX, checked in
ONNX Runtime, with a speed table): thin callers of :func:`~crosslayer.encode.api.pack` and
:func:`~crosslayer.encode.api.export_onnx`. A model ``torch.onnx`` cannot export (or a quantization the int8
graph cannot express) is reported with the reason, never an aborted flow."""

from __future__ import annotations

from typing import Any

from crosslayer.encode.api import EncodeConfig, ExportConfig, export_onnx, is_int8, pack, unpack
from crosslayer.errors import CrossLayerError
from crosslayer.report import Report
from crosslayer.stage import PACKED_PATH, StageContext, StageResult, register_stage
from crosslayer.train import evaluate

__all__ = ["EncodeConfig", "ExportConfig"]

PARTS = ("values", "indices", "pointers", "codebook", "bias", "tensors", "graph", "header")


@register_stage("encode", EncodeConfig, "pack the current model into a .xlm file with exact storage accounting")
def encode_stage(ctx: StageContext, cfg: EncodeConfig) -> StageResult:
    rep = Report("encode")
    path = ctx.stage_dir("encode") / "model.xlm"
    try:
        res = pack(ctx.model, cfg, path, ctx.data.test.images[:2])
    except CrossLayerError as exc:
        rep.notes.append(f"not packed: {exc}")
        rep.metrics["packed"] = False
        return StageResult(report=rep)
    acc_before = evaluate(ctx.model, ctx.data.test).accuracy
    acc_after = evaluate(unpack(path), ctx.data.test).accuracy
    size = path.stat().st_size
    rep.add_table("Storage per weight (bits)", ["weight", "format", *PARTS[:4], "total"],
                  [[name, res.layer_formats.get(name, ""), *(parts.get(k, 0) for k in PARTS[:4]), sum(parts.values())]
                   for name, parts in res.layer_bits.items()])
    rep.add_table("Storage per part (bits)", ["part", "bits"], [[k, res.bits_by_part.get(k, 0)] for k in PARTS])
    rep.metrics.update({"packed": True, "packed_bytes": size, "accounted_bytes": res.file_bytes,
                        "weight_bits_total": res.weight_bits, "compression_ratio": res.compression_ratio,
                        "file_compression_ratio": res.dense_fp32_bits / 8 / size, "graph_kind": res.graph_kind,
                        "test_accuracy": acc_after, "roundtrip_accuracy_delta": acc_after - acc_before})
    rep.headline.update({"test_accuracy": acc_after, "model_bytes": float(size)})
    rep.notes.append(f"packed file: {path} ({size} bytes, equal to the accounting: {size == res.file_bytes}); "
                     f"graph: {res.graph_kind}; the test accuracy is the unpacked file's, run by ONNX Runtime. The "
                     "compression ratio counts weight values, indices, pointers and codebooks against dense fp32 "
                     "Conv2d / Linear weights")
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
        try:
            res = export_onnx(model, cfg, out / fname, test.images[:2], data=test)
        except CrossLayerError as exc:
            rows.append([fname, "int8 QDQ" if int8 else "fp32", None, None, None, None, f"not exported: {exc}"])
            rep.notes.append(f"{label} model not exported: {exc}")
            continue
        rows.append([fname, "int8 QDQ" if int8 else "fp32", res.file_bytes, res.agreement, res.max_abs_diff,
                     res.accuracy, "ok"])
        rep.metrics[f"{label}_onnx_top1_agreement"] = res.agreement
        rep.metrics[f"{label}_onnx_max_abs_logit_diff"] = res.max_abs_diff
        rep.metrics[f"{label}_onnx_accuracy"] = res.accuracy
        rep.metrics[f"{label}_onnx_int8"] = int8
        if res.exact_agreement is not None:
            rep.metrics[f"{label}_onnx_exact_top1_agreement"] = res.exact_agreement
            rep.notes.append(f"{label} int8: top-1 agreement {res.agreement:.4f} with ONNX Runtime's integer kernels, "
                             f"{res.exact_agreement:.4f} with the QDQ graph run as written")
        timing_rows += [[label, runtime, t["latency_ms_b1"], t["throughput_b256"]] for runtime, t in res.timing.items()]
    rep.add_table("ONNX exports (checked in ONNX Runtime against PyTorch on the test images)",
                  ["file", "type", "bytes", "top-1 agreement", "max |logit diff|", "test accuracy", "status"], rows)
    if timing_rows:
        rep.add_table("Speed on this machine", ["model", "runtime", "latency batch 1 (ms)",
                                                "throughput batch 256 (img/s)"], timing_rows)
        base = [r for r in timing_rows if r[0] == "baseline" and r[1] == "PyTorch"]
        if base:
            best = max(timing_rows, key=lambda r: r[3] if r[0] == "current" else 0)
            rep.metrics["best_throughput_ratio"] = best[3] / base[0][3]
            rep.metrics["best_variant"] = f"{best[0]} / {best[1]}"
    rep.metrics["test_accuracy"] = rep.metrics.get("current_onnx_accuracy")
    if rep.metrics["test_accuracy"] is not None:
        rep.headline["test_accuracy"] = rep.metrics["test_accuracy"]
    return StageResult(report=rep)
