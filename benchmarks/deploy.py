"""The deployable compressed LeNet-5: packed file, ONNX agreement, real speed, reader fuzzing.

- packed file: the compressed LeNet-5 of benchmarks/compression.py (unstructured pruning + 4-bit QAT) through
  ``crosslayer.encode.pack_model``; its size and the accuracy of ``unpack_model`` of it;
- structured pruning (``crosslayer.prune`` structured schedule, fine-tuned within a 0.1 pp validation budget),
  then 8-bit PTQ (``crosslayer.quant``);
- speed table: fp32 / int8 x dense / structurally pruned x PyTorch eager / ONNX Runtime (``crosslayer.encode``
  exports, int8 as QDQ) / torch.ao FX int8 (x86 backend), plus the unstructured sparse kernel path
  (torch.sparse CSR and SciPy CSR for the fc layers). Each measurement runs in its OWN process, the variants
  are interleaved (rotated order) over several rounds, and medians are quoted; the ratio to the fp32 PyTorch
  baseline is the median of the per-round ratios;
- fuzzing: hypothesis mutates the packed file (truncation, byte flips, extreme integers, splices; with the CRC
  recomputed so the parser is reached), every input goes through ``unpack_model`` under tracemalloc; a failure
  is any exception other than ``PackFormatError`` or a peak allocation above 64 x input size + 1 MiB.

    python benchmarks/compression.py --models lenet5   # first: makes the compressed model
    python benchmarks/deploy.py [--rounds 3] [--fuzz 2000]
    python benchmarks/deploy.py --quick                # uses compression_quick's model, few rounds

Writes benchmarks/results/deploy.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, WORK, write_results

THREADS = 2
BASELINE_CFG = BASELINE_RECIPES["lenet5"]  # benchmarks/baseline.py settings
STRUCT_TARGETS = (0.3, 0.5, 0.6, 0.7, 0.75, 0.8)
DIR = WORK / "deploy"


# ------------------------------------------------------------------ sparse kernel path (fc layers)
class CSRLinear(nn.Module):
    """A Linear whose weight is held in CSR and multiplied with a sparse kernel (torch.sparse or SciPy)."""

    def __init__(self, lin: nn.Linear, backend: str) -> None:
        super().__init__()
        w = lin.weight.detach().float()
        self.backend = backend
        self.bias_t = lin.bias.detach().clone() if lin.bias is not None else torch.zeros(w.shape[0])
        if backend == "torch_sparse":
            self.w_t = w.to_sparse_csr()
        else:
            import scipy.sparse as sp

            self.w_s = sp.csr_matrix(w.numpy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch_sparse":
            y = (self.w_t @ x.t()).t()
        else:
            y = torch.from_numpy(np.ascontiguousarray((self.w_s @ x.numpy().T).T))
        return y + self.bias_t


def sparsify(model: nn.Module, backend: str) -> nn.Module:
    m = copy.deepcopy(model).eval()
    for name, mod in list(m.named_children()):
        if isinstance(mod, nn.Linear):
            setattr(m, name, CSRLinear(mod, backend))
    return m


def torchao_int8(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    """PyTorch's own int8 static quantization (FX graph mode, x86 backend, real int8 kernels)."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
        with torch.no_grad():
            for i in range(0, len(calib), 128):
                prepared(calib[i:i + 128])
        return convert_fx(prepared)


def build_runner(spec: dict[str, Any]) -> Any:
    from crosslayer.encode.speed import ort_runner, torch_runner

    kind, path = spec["kind"], spec["path"]
    if kind == "ort":
        return ort_runner(Path(path).read_bytes(), threads=THREADS)
    model = torch.load(path, map_location="cpu", weights_only=False).eval()
    if kind == "torchao":
        model = torchao_int8(model, torch.from_numpy(np.load(spec["calib"])))
    elif kind in ("torch_sparse", "scipy_sparse"):
        model = sparsify(model, kind)
    return torch_runner(model)


def worker(spec_path: str) -> None:
    """Child process: time one variant, print one RESULT line."""
    torch.set_num_threads(THREADS)
    from crosslayer.encode.speed import time_runner

    spec = json.loads(Path(spec_path).read_text())
    run = build_runner(spec)
    images = np.load(spec["images"])
    print("RESULT " + json.dumps(time_runner(run, images, repeats=5, min_seconds=0.5)), flush=True)


# ------------------------------------------------------------------ fuzzing
def _fix_crc(b: bytes) -> bytes:
    return b[:-4] + struct.pack("<I", zlib.crc32(b[:-4])) if len(b) >= 4 else b


def _peak(fn: Any, data: bytes) -> int:
    tracemalloc.start()
    try:
        fn(data)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return int(peak)


def fuzz_reader(blob: bytes, n: int) -> dict[str, Any]:
    """Hypothesis-driven mutations of a valid packed file through ``unpack_model`` under tracemalloc.

    Allocation bound per input: 64 x its size + 1 MiB + 2 x the peak of decoding the valid file (a
    compressed file legitimately expands to its dense model; an oversized claim must not go beyond that).
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from crosslayer.encode import PackFormatError, unpack_model

    valid_peak = _peak(unpack_model, blob)
    stats: dict[str, Any] = {"valid_file_peak_bytes": valid_peak, "inputs": 0,  # counters filled by check()
                             "rejected": 0, "accepted": 0, "failures": [], "max_seconds": 0.0,
                             "max_peak_over_size": 0.0}
    size = len(blob)
    mutation = st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, size - 1)),
        st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1,
                                            max_size=8), st.booleans()),
        st.tuples(st.just("int32"), st.integers(0, size - 5),
                  st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 24, 1 << 30, 65535]), st.booleans()),
        st.tuples(st.just("int16"), st.integers(0, size - 3), st.sampled_from([0, 1, 2, 0x7FFF, 0xFFFF]),
                  st.booleans()),
        st.tuples(st.just("splice"), st.integers(0, size - 1), st.integers(0, 4096), st.binary(max_size=64)),
        st.tuples(st.just("random"), st.binary(min_size=0, max_size=2048)),
    )

    def mutate(m: tuple[Any, ...]) -> bytes:
        kind = m[0]
        if kind == "truncate":
            return blob[:m[1]]
        if kind == "flip":
            b = bytearray(blob)
            for pos, x in m[1]:
                b[pos] ^= x
            return _fix_crc(bytes(b)) if m[2] else bytes(b)
        if kind in ("int32", "int16"):
            fmt = "<I" if kind == "int32" else "<H"
            b = bytearray(blob)
            struct.pack_into(fmt, b, m[1], m[2])
            return _fix_crc(bytes(b)) if m[3] else bytes(b)
        if kind == "splice":
            return _fix_crc(blob[:m[1]] + m[3] + blob[m[1] + m[2]:])
        return _fix_crc(blob[:16] + m[1] + b"\0\0\0\0")

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(mutation)
    def check(m: tuple[Any, ...]) -> None:
        data = mutate(m)
        stats["inputs"] += 1
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            unpack_model(data)
            stats["accepted"] += 1
        except PackFormatError:
            stats["rejected"] += 1
        except Exception as exc:  # counting crashes is the point
            stats["failures"].append({"mutation": m[0], "error": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        dt = time.perf_counter() - t0
        stats["max_seconds"] = max(stats["max_seconds"], dt)
        stats["max_peak_over_size"] = max(stats["max_peak_over_size"], peak / max(1, len(data)))
        if peak > 64 * len(data) + (1 << 20) + 2 * valid_peak:
            stats["failures"].append({"mutation": m[0], "error": f"peak allocation {peak} B for {len(data)} B"})

    check()
    return stats


# ------------------------------------------------------------------ main
def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fuzz", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(THREADS)
    from crosslayer.data import load_splits
    from crosslayer.encode import pack_model, unpack_model
    from crosslayer.encode.onnx_export import onnx_model
    from crosslayer.encode.speed import torch_runner
    from crosslayer.models import build_model
    from crosslayer.prune import IterativePruner, ScheduleConfig, count_macs
    from crosslayer.quant import QuantizeConfig, quantize
    from crosslayer.train import TrainConfig, evaluate, fit_cached

    t_start = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    DIR.mkdir(parents=True, exist_ok=True)
    data = load_splits("mnist", None, train_limit=2000 if args.quick else 10000,
                       test_limit=1000 if args.quick else None, seed=0)
    bcfg = TrainConfig(**{**BASELINE_CFG, "epochs": 2 if args.quick else 20})
    base = build_model("lenet5")
    fit_cached("lenet5", base, data.train, data.val, bcfg, seed=0, desc="baseline lenet5")
    base.eval()
    base_acc = evaluate(base, data.test).accuracy
    res: dict[str, Any] = {"baseline_accuracy": base_acc, "load_average_start": list(os.getloadavg())}

    # 1. the packed file of the compressed LeNet-5
    comp_path = WORK / "compression" / f"lenet5_compressed{suffix}.pt"
    if not comp_path.is_file():
        raise SystemExit(f"{comp_path} is missing: run benchmarks/compression.py{' --quick' if args.quick else ''}")
    compressed = torch.load(comp_path, map_location="cpu", weights_only=False).eval()
    blob, acct = pack_model(compressed)
    (DIR / "lenet5.xlm").write_bytes(blob)
    unpacked = unpack_model(blob)
    packed_acc = evaluate(unpacked, data.test).accuracy
    res.update({"packed_bytes": len(blob), "packed_kb": len(blob) / 1024, "dense_fp32_bytes":
                4 * sum(p.numel() for p in base.parameters()), "packed_bits_by_part": acct["total_bits"],
                "packed_accuracy": packed_acc, "packed_accuracy_loss_pp": 100 * (base_acc - packed_acc),
                "compressed_accuracy": evaluate(compressed, data.test).accuracy})

    # 2. structured pruning within budget, then int8 PTQ
    t0 = time.perf_counter()
    scfg = ScheduleConfig(structured=True, targets=(0.3, 0.5) if args.quick else STRUCT_TARGETS, budget_pp=0.1,
                          finetune_epochs=1 if args.quick else 3, finetune_lr=1e-3, optimizer="adam")
    sp = IterativePruner(base, data, scfg, seed=0, state_path=DIR / f"struct{suffix}.pt").run()
    struct = sp.model.eval()
    ex = data.train.images[:1]
    res["structured"] = {"channels": sp.channels, "stop_reason": sp.stop_reason,
                         "params": sum(p.numel() for p in struct.parameters()),
                         "params_baseline": sum(p.numel() for p in base.parameters()),
                         "macs": count_macs(struct, ex), "macs_baseline": count_macs(base, ex),
                         "test_accuracy": evaluate(struct, data.test).accuracy,
                         "accuracy_loss_pp": 100 * (base_acc - evaluate(struct, data.test).accuracy),
                         "val_loss_pp": sp.kept["val_loss_pp"], "seconds": time.perf_counter() - t0}
    q8 = QuantizeConfig(mode="ptq", weight_bits=8, act_bits=8)
    base_q = quantize(base, q8, data, seed=0).model.eval()
    struct_q = quantize(struct, q8, data, seed=0).model.eval()

    # 3. artefacts for the timing workers
    calib = data.train.images[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:1024]]
    np.save(DIR / "calib.npy", calib.numpy())
    np.save(DIR / "images.npy", data.test.images[:256].numpy())
    pruned_fp32 = build_model("lenet5")
    pstate = torch.load(WORK / "compression" / f"lenet5_prune{suffix}.pt", map_location="cpu", weights_only=True)
    pruned_fp32.load_state_dict(pstate["state_dict"])
    pruned_fp32.eval()
    models = {"base": base, "struct": struct, "pruned": pruned_fp32}
    for k, m in models.items():
        torch.save(m, DIR / f"{k}.pt")
    onnx = {"fp32_dense": onnx_model(base), "int8_dense": onnx_model(base_q),
            "fp32_struct": onnx_model(struct), "int8_struct": onnx_model(struct_q)}
    for k, p in onnx.items():
        (DIR / f"{k}.onnx").write_bytes(p.SerializeToString())
    variants: dict[str, dict[str, Any]] = {
        "fp32 dense PyTorch": {"kind": "torch", "path": "base.pt", "ref": base},
        "fp32 dense ONNX Runtime": {"kind": "ort", "path": "fp32_dense.onnx", "ref": base},
        "int8 dense ONNX Runtime (QDQ)": {"kind": "ort", "path": "int8_dense.onnx", "ref": base_q},
        "int8 dense torch.ao FX": {"kind": "torchao", "path": "base.pt", "ref": base},
        "fp32 structured PyTorch": {"kind": "torch", "path": "struct.pt", "ref": struct},
        "fp32 structured ONNX Runtime": {"kind": "ort", "path": "fp32_struct.onnx", "ref": struct},
        "int8 structured ONNX Runtime (QDQ)": {"kind": "ort", "path": "int8_struct.onnx", "ref": struct_q},
        "int8 structured torch.ao FX": {"kind": "torchao", "path": "struct.pt", "ref": struct},
        "fp32 unstructured dense kernels PyTorch": {"kind": "torch", "path": "pruned.pt", "ref": pruned_fp32},
        "fp32 unstructured torch.sparse CSR fc": {"kind": "torch_sparse", "path": "pruned.pt", "ref": pruned_fp32},
        "fp32 unstructured SciPy CSR fc": {"kind": "scipy_sparse", "path": "pruned.pt", "ref": pruned_fp32},
    }
    baseline_key = "fp32 dense PyTorch"

    # 4. accuracy and top-1 agreement with the PyTorch model each variant was made from (full test set)
    x = data.test.images.numpy()
    table: dict[str, dict[str, Any]] = {}
    for name, v in variants.items():
        spec = {"kind": v["kind"], "path": str(DIR / v["path"]), "calib": str(DIR / "calib.npy"),
                "images": str(DIR / "images.npy")}
        v["spec"] = spec
        try:
            run = build_runner(spec)
            out = np.concatenate([run(np.ascontiguousarray(x[i:i + 1000])) for i in range(0, len(x), 1000)])
            ref = torch_runner(v["ref"])
            ref_out = np.concatenate([ref(np.ascontiguousarray(x[i:i + 1000])) for i in range(0, len(x), 1000)])
            acc = float((out.argmax(1) == data.test.labels.numpy()).mean())
            table[name] = {"kind": v["kind"], "test_accuracy": acc, "accuracy_loss_pp": 100 * (base_acc - acc),
                           "top1_agreement_with_pytorch_source": _agreement(out, ref_out), "times": []}
        except Exception as exc:  # an unavailable backend goes in the table
            table[name] = {"kind": v["kind"], "error": f"{type(exc).__name__}: {exc}"[:300], "times": []}

    # 5. interleaved timing, one process per measurement
    names = [n for n in variants if "error" not in table[n]]
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sp_path = DIR / "spec.json"
            sp_path.write_text(json.dumps(variants[name]["spec"]))
            proc = subprocess.run([sys.executable, __file__, "--worker", str(sp_path)], capture_output=True,
                                  text=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                table[name]["error"] = proc.stderr[-300:]
                continue
            table[name]["times"].append(json.loads(line[7:]))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base_thr = [t["throughput_b256"] for t in table[baseline_key]["times"]]
    for name in names:
        t = table[name]["times"]
        if not t:
            continue
        thr = [e["throughput_b256"] for e in t]
        table[name].update({"throughput_b256_median": statistics.median(thr),
                            "latency_ms_b1_median": statistics.median(e["latency_ms_b1"] for e in t),
                            "throughput_ratio_vs_fp32_pytorch": statistics.median(
                                a / b for a, b in zip(thr, base_thr, strict=False))})
    compressed_names = [n for n in names if not n.startswith("fp32 dense") and "throughput_b256_median" in table[n]
                        and table[n]["accuracy_loss_pp"] <= 0.1 + 1e-9]
    best = max(compressed_names, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"])
    structs = [n for n in names if "structured" in n and "throughput_b256_median" in table[n]]
    best_struct = max(structs, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"])
    res.update({"best_structured_variant": best_struct,
                "best_structured_throughput_ratio": table[best_struct]["throughput_ratio_vs_fp32_pytorch"],
                "best_structured_accuracy_loss_pp": table[best_struct]["accuracy_loss_pp"]})
    onnx_names = [n for n in names if "ONNX" in n]
    res.update({"best_variant": best, "best_throughput_ratio": table[best]["throughput_ratio_vs_fp32_pytorch"],
                "best_variant_accuracy_loss_pp": table[best]["accuracy_loss_pp"],
                "onnx_top1_agreement": min(table[n]["top1_agreement_with_pytorch_source"] for n in onnx_names),
                "onnx_top1_agreement_note": "minimum over the ONNX Runtime variants of the share of the 10k test "
                                            "images whose top-1 equals that of the PyTorch model it was exported from",
                "variants": table,
                "timing": f"{args.rounds} rounds, variants interleaved (rotated order), each measurement in its own "
                          f"process with {THREADS} threads; medians; ratio = median of per-round ratios to "
                          f"'{baseline_key}'; best = fastest compressed variant within 0.1 pp of the baseline"})

    # 6. fuzz the reader
    t0 = time.perf_counter()
    fz = fuzz_reader(blob, 200 if args.quick else args.fuzz)
    res.update({"fuzz_inputs": fz["inputs"], "fuzz_failures": len(fz["failures"]), "fuzz": fz,
                "fuzz_seconds": time.perf_counter() - t0})
    res["seconds"] = time.perf_counter() - t_start
    res["load_average_end"] = list(os.getloadavg())
    write_results("deploy" + suffix, res)


if __name__ == "__main__":
    main()
