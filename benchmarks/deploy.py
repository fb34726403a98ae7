"""The deployable compressed LeNet-5: packed file, ONNX agreement, real speed within an accuracy budget,
reader fuzzing.

- packed file: the compressed LeNet-5 of benchmarks/compression.py (unstructured pruning + 4-bit QAT) through
  ``crosslayer.encode.pack_model``; its size and the accuracy of ``unpack_model`` of it;
- structured pruning: one-shot L1 channel pruning (``crosslayer.prune.prune_groups``; Li et al., ICLR 2017) of
  the baseline to several widths (``--widths``: fraction of channels removed from every group), each followed
  by recovery training with the baseline recipe's augmentations (``--recovery-epochs`` at ``--recovery-lr``,
  cosine, the best validation epoch kept), then 8-bit PTQ (``crosslayer.quant``);
- speed table: fp32 / int8 x dense / structurally pruned x PyTorch eager / ONNX Runtime (``crosslayer.encode``
  exports, int8 as QDQ) / torch.ao FX int8 (x86 backend), plus the unstructured sparse kernel path (torch.sparse
  CSR and SciPy CSR for the fc layers). Each measurement runs in its OWN process with 2 threads, the variants
  are interleaved (rotated order) over ``--rounds`` rounds, medians are quoted, every raw round is kept, and
  each process reports its peak resident memory; the ratio to the fp32 PyTorch baseline is the median of the
  per-round ratios;
- the deployable choice, by a rule fixed before the run and applied on the VALIDATION split only: the variant
  with the highest median throughput ratio among those whose validation accuracy is at most 0.1 pp below the
  fp32 baseline's; its test accuracy is then measured once (the table lists every variant's test accuracy too,
  for reading, never for choosing);
- the chosen variant's accuracy over seeds: when it is a structurally pruned one, its recovery training is
  repeated with seeds 1 and 2 (the timed run is seed 0) from the same pruned network, exported and measured as
  the chosen variant (``best_variant_over_seeds``: the losses' mean and spread over seeds 0-2);
- fuzzing: hypothesis mutates the packed file (truncation, byte flips, extreme integers, splices; with the CRC
  recomputed so the parser is reached), every input goes through ``unpack_model`` under tracemalloc; a failure
  is any exception other than ``PackFormatError`` or a peak allocation above 64 x input size + 1 MiB.

``--model resnet20`` makes the same table for ResNet-20 on Fashion-MNIST (budget 0.5 pp, target 3x): the
cached baseline of benchmarks/zoo_compress.py (full split, 54,000 / 6,000 / 10,000), structured L1 channel
pruning of 30 % of every group with channel counts rounded to multiples of 8 (the first run also had 20 %),
fine-tuned for 6 epochs on the whole training split (seed 1; MODEL_PLANS says why the recipe changed),
8-bit PTQ, the same variants, rule and timing (validation images, 6,000 for the choice); no packed file or
fuzzing (zoo.py and zoo_compress.py cover those for ResNet-20). ``--seeds-of-best 2,3`` then repeats the chosen
variant's fine-tune with other seeds and records its losses' mean and spread (``best_variant_over_seeds``).

    python benchmarks/compression.py --models lenet5 --skip-peers   # first: makes the compressed model
    python benchmarks/deploy.py [--rounds 5] [--fuzz 2000]
    python benchmarks/deploy.py --quick                # uses compression_quick's model, few rounds
    python benchmarks/deploy.py --model resnet20       # after zoo_compress.py baseline: deploy_resnet20.json
    python benchmarks/deploy.py --model resnet20 --seeds-of-best 2,3   # the chosen variant's loss over seeds

Writes benchmarks/results/deploy.json (deploy_resnet20.json with ``--model resnet20``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from _common import BASELINE_RECIPES, RESULTS, WORK, baseline_model, merge_results, spread, write_results

THREADS = 2
BASELINE_CFG = BASELINE_RECIPES["lenet5"]  # benchmarks/baseline.py settings
DIR = WORK / "deploy"
BUDGET_PP = 0.1
# Per model: the structured widths tried and the throughput target of the issue (x fp32 PyTorch eager, batch 256).
MODEL_PLANS: dict[str, dict[str, Any]] = {
    "lenet5": {"widths": (0.5, 0.6, 0.7, 0.8), "budget_pp": 0.1, "target_ratio": 8.0},
    # ResNet-20's structured fine-tune: the first run reused zoo_compress.py's (4 epochs on 20,000 images, seed 0)
    # and lost 0.57 pp (20 %) / 1.12 pp (30 %) on validation; the second fine-tunes for 6 epochs on the whole
    # training split from a fresh seed (1), since that change came after the first run's table (test column
    # included) had been seen. The first run's figures stay in the results file ("earlier_runs"). Only 30 % is
    # trained again: 20 % keeps the same 16/24/48 widths and topped out at 2.90x (fp32 ONNX Runtime) there.
    "resnet20": {"widths": (0.3,), "budget_pp": 0.5, "target_ratio": 3.0,
                 "finetune": {"epochs": 6, "lr": 0.02, "batch_size": 128, "optimizer": "sgd", "weight_decay": 5e-4},
                 "finetune_seed": 1},
}
BASELINE_KEY = "fp32 dense PyTorch"


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
    """Child process: time one variant, print one RESULT line (times and peak resident memory)."""
    torch.set_num_threads(THREADS)
    from _common import reset_peak_rss, rss_mb, window_peak_rss_mb
    from crosslayer.encode.speed import time_runner

    spec = json.loads(Path(spec_path).read_text())
    images = np.load(spec["images"], allow_pickle=False)
    rss0 = rss_mb()
    reset_peak_rss()
    run = build_runner(spec)
    res = time_runner(run, images, repeats=5, min_seconds=0.5)
    peak = window_peak_rss_mb()
    print("RESULT " + json.dumps({**res, "peak_rss_mb": peak, "working_mb": peak - rss0}), flush=True)


# ------------------------------------------------------------------ measuring and choosing (every model)
def accuracy_table(variants: dict[str, dict[str, Any]], splits: dict[str, Any], folder: Path,
                   ) -> dict[str, dict[str, Any]]:
    """Each variant's accuracy on every split through its own runner (files under ``folder``), its top-1
    agreement with the PyTorch model it came from on the test split, and its loss against BASELINE_KEY (an
    unavailable backend is listed with its error)."""
    from crosslayer.encode.speed import torch_runner

    table: dict[str, dict[str, Any]] = {}
    ref_outputs: dict[int, np.ndarray] = {}
    for name, v in variants.items():
        spec = {"kind": v["kind"], "path": str(folder / v["path"]), "calib": str(folder / "calib.npy"),
                "images": str(folder / "images.npy")}
        v["spec"] = spec
        try:
            run = build_runner(spec)
            ref = torch_runner(v["ref"])
            row: dict[str, Any] = {"kind": v["kind"], "times": []}
            for split, ds in splits.items():
                xs = ds.images.numpy()
                out = np.concatenate([run(np.ascontiguousarray(xs[i:i + 1000])) for i in range(0, len(xs), 1000)])
                row[f"{split}_accuracy"] = float((out.argmax(1) == ds.labels.numpy()).mean())
                if split == "test":
                    if id(v["ref"]) not in ref_outputs:     # one PyTorch pass per source model
                        ref_outputs[id(v["ref"])] = np.concatenate([ref(np.ascontiguousarray(xs[i:i + 1000]))
                                                                    for i in range(0, len(xs), 1000)])
                    row["top1_agreement_with_pytorch_source"] = _agreement(out, ref_outputs[id(v["ref"])])
            table[name] = row
        except Exception as exc:  # an unavailable backend goes in the table
            table[name] = {"kind": v["kind"], "error": f"{type(exc).__name__}: {exc}"[:300], "times": []}
        print(json.dumps({name: {k: x for k, x in table[name].items() if k != "times"}}), flush=True)
    base_val, base_test = table[BASELINE_KEY]["val_accuracy"], table[BASELINE_KEY]["test_accuracy"]
    for row in table.values():
        if "error" not in row:
            row["val_loss_pp"] = 100 * (base_val - row["val_accuracy"])
            row["accuracy_loss_pp"] = 100 * (base_test - row["test_accuracy"])
    return table


def time_variants(variants: dict[str, dict[str, Any]], table: dict[str, dict[str, Any]], rounds: int) -> list[str]:
    """Time every variant without an error: ``rounds`` rounds in rotated order, each measurement in its own
    process, under the timing lock; medians and the median per-round ratio to BASELINE_KEY go into ``table``.
    Returns the names with a full set of rounds."""
    from _common import quiet_machine

    names = [n for n in variants if "error" not in table[n]]
    with quiet_machine():
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                sp_path = Path(variants[name]["spec"]["path"]).parent / "spec.json"
                sp_path.write_text(json.dumps(variants[name]["spec"]))
                proc = subprocess.run([sys.executable, __file__, "--worker", str(sp_path)], capture_output=True,
                                      text=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    table[name]["error"] = proc.stderr[-300:]
                    continue
                table[name]["times"].append(json.loads(line[7:]))
            print(f"round {r + 1}/{rounds} done", flush=True)
    base_thr = [t["throughput_b256"] for t in table[BASELINE_KEY]["times"]]
    for name in names:
        t = table[name]["times"]
        if not t or len(t) != len(base_thr):
            continue
        thr = [e["throughput_b256"] for e in t]
        table[name].update({"throughput_b256_median": statistics.median(thr),
                            "latency_ms_b1_median": statistics.median(e["latency_ms_b1"] for e in t),
                            "peak_rss_mb_median": statistics.median(e["peak_rss_mb"] for e in t),
                            "working_mb_median": statistics.median(e["working_mb"] for e in t),
                            "throughput_ratio_vs_fp32_pytorch": statistics.median(
                                a / b for a, b in zip(thr, base_thr, strict=True))})
    return [n for n in names if "throughput_ratio_vs_fp32_pytorch" in table[n]]


def choose_variant(table: dict[str, dict[str, Any]], timed: list[str], budget_pp: float) -> tuple[str, list[str]]:
    """The selection rule, on validation only: among the timed variants but BASELINE_KEY, those at most
    ``budget_pp`` below the baseline's validation accuracy; the highest median throughput ratio wins."""
    from crosslayer.train import within_budget

    eligible = [n for n in timed if n != BASELINE_KEY and within_budget(table[n]["val_loss_pp"], budget_pp)]
    return max(eligible, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"]), eligible



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


def channel_counts(model: nn.Module) -> dict[str, int]:
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def structured_candidate(base: nn.Module, data: Any, width: float, *, epochs: int, lr: float,
                         path: Path, seed: int = 0) -> nn.Module:
    """``base`` with ``width`` of the channels of every prunable group removed (L1 importance, one shot), then
    recovery training with the baseline recipe's augmentations (cosine from ``lr``, best validation epoch kept).
    Reloaded from ``path`` when a previous run saved it with the same settings and the same baseline weights."""
    from crosslayer.prune.schedule import rebuild_structure
    from crosslayer.prune.structured import prunable_groups, prune_groups
    from crosslayer.train import TrainConfig, fit

    ex = data.train.images[:2]
    groups = prunable_groups(base, ex)
    counts = {g.key: max(1, g.size - round(width * g.size)) for g in groups}
    cfg = TrainConfig(**{**BASELINE_CFG, "epochs": epochs, "lr": lr})
    from crosslayer.checkpoint import state_digest

    key = json.dumps({"width": width, "cfg": vars(cfg), "counts": counts, "base": state_digest(base),
                      **({"seed": seed} if seed else {})}, sort_keys=True)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            model = rebuild_structure(base, counts, ex)
            model.load_state_dict(saved["state_dict"])
            return model.eval()
    model = copy.deepcopy(base)
    prune_groups(model, prunable_groups(model, ex), counts, "l1")
    fit(model, data.train, data.val, cfg, seed=seed, desc=f"recover {width:g} (seed {seed})")
    from crosslayer.fileio import save_torch

    save_torch(path, {"key": key, "state_dict": model.state_dict()})
    return model.eval()


def best_variant_seeds(best: str, variants: dict[str, dict[str, Any]], structs: dict[str, dict[str, Any]],
                       table: dict[str, dict[str, Any]], base: nn.Module, data: Any, args: argparse.Namespace,
                       seeds: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """The chosen variant's accuracy over recovery seeds: its structured model re-trained from the same pruned
    network with each of ``seeds`` (the timed run in ``table`` is seed 0; int8 calibration unchanged), exported as
    the chosen variant was and measured through the same runtime on validation and test (:func:`over_seeds`).
    Nothing here chooses anything."""
    from crosslayer.encode.onnx_export import onnx_model
    from crosslayer.quant import QuantizeConfig, quantize

    tag = next((t for t in structs if f" {t} " in f" {best} "), None)
    if tag is None:
        return {"skipped": f"{best!r} involves no training of its own (no structured width); nothing varies"}
    width = structs[tag]["info"]["width_removed"]
    key = f"s{int(100 * width)}"
    runs = [{"seed": 0, **{k: table[best].get(k) for k in ("val_accuracy", "test_accuracy", "val_loss_pp",
                                                             "accuracy_loss_pp")}}]
    for seed in seeds:
        m = structured_candidate(base, data, width, epochs=args.recovery_epochs, lr=args.recovery_lr,
                                 path=DIR / f"struct{int(100 * width)}_seed{seed}.pt", seed=seed)
        int8 = quantize(m, QuantizeConfig(mode="ptq", weight_bits=8, act_bits=8), data, seed=0).model.eval()
        ks = f"{key}_seed{seed}"
        torch.save(m, DIR / f"{ks}.pt")
        (DIR / f"fp32_{ks}.onnx").write_bytes(onnx_model(m).SerializeToString())
        (DIR / f"int8_{ks}.onnx").write_bytes(onnx_model(int8).SerializeToString())
        chosen = variants[best]
        name = f"{best} (seed {seed})"
        spec = {"kind": chosen["kind"], "path": chosen["path"].replace(key, ks),
                "ref": int8 if chosen["ref"] is structs[tag]["int8"] else m}
        pair = {BASELINE_KEY: variants[BASELINE_KEY], name: spec}
        row = accuracy_table(pair, {"val": data.val, "test": data.test}, DIR)[name]
        runs.append({"seed": seed, **{k: row.get(k) for k in ("val_accuracy", "test_accuracy", "val_loss_pp",
                                                              "accuracy_loss_pp", "error")}})
    return over_seeds(best, f"{best}: recovery training of the {tag} model re-run with seeds "
                            f"{', '.join(map(str, seeds))} (seed 0 is the timed, chosen run)", runs)


def over_seeds(variant: str, what: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``best_variant_over_seeds`` record: every run, and the mean and spread of the test and validation losses
    over the runs without an error."""
    ok = [r for r in runs if r.get("error") is None]
    return {"variant": variant, "what": what, "seeds": [r["seed"] for r in ok],
            "test_loss_pp": spread([r["accuracy_loss_pp"] for r in ok]),
            "val_loss_pp": spread([r["val_loss_pp"] for r in ok]), "runs": runs,
            "command": " ".join(["python benchmarks/deploy.py", *sys.argv[1:]])}


# ------------------------------------------------------------------ ResNet-20 on Fashion-MNIST
ZOO_DIR = WORK / "deploy_resnet20"


def zoo_structured(zc: Any, ctx: Any, base: nn.Module, amount: float, plan: dict[str, Any],
                   seed: int | None = None) -> nn.Module:
    """``base`` with ``amount`` of every channel group removed (multiples of zoo_compress.ROUND_TO), fine-tuned
    with ``plan["finetune"]`` on the whole training split (seed ``plan["finetune_seed"]``, or ``seed``); reuses a
    previous run's model with the same settings."""
    from crosslayer.checkpoint import load_checkpoint, save_checkpoint
    from crosslayer.train import TrainConfig, fit

    seed = plan["finetune_seed"] if seed is None else seed
    key = {"amount": amount, "round_to": zc.ROUND_TO, "finetune": plan["finetune"], "images": len(ctx.data.train),
           "seed": seed}
    stem = ZOO_DIR / (f"s{round(100 * amount)}" + ("" if seed == plan["finetune_seed"] else f"_seed{seed}"))
    if not (stem.with_suffix(".key").is_file() and json.loads(stem.with_suffix(".key").read_text()) == key):
        model = zc.pruned_shape(base, ctx, amount)
        fit(model, ctx.data.train, ctx.data.val, TrainConfig(**plan["finetune"]), seed=seed,
            desc=f"fine-tune structured {amount:g} (seed {seed})")
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        save_checkpoint(stem, model, copy.deepcopy(base))
        stem.with_suffix(".key").write_text(json.dumps(key))
    return load_checkpoint(stem, copy.deepcopy(base)).eval()


def earlier_runs(path: Path, finetune: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows of the results file's earlier runs whose structured fine-tune differed from
    ``finetune``, so a recipe change never erases the figures it replaced."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    rows = list(old.get("earlier_runs", []))
    if old.get("structured_finetune") != finetune and "variants" in old:
        rows.append({"structured_finetune": old.get("structured_finetune"), "best_variant": old.get("best_variant"),
                     "best_throughput_ratio": old.get("best_throughput_ratio"),
                     "variants": {n: {k: v.get(k) for k in ("val_loss_pp", "accuracy_loss_pp",
                                                           "throughput_ratio_vs_fp32_pytorch")}
                                  for n, v in old["variants"].items()}})
    return rows


def resnet20_main(args: argparse.Namespace) -> None:
    """The deployment table of ResNet-20 on Fashion-MNIST (see the module docstring)."""
    import zoo_compress as zc
    from crosslayer.encode.onnx_export import onnx_model
    from crosslayer.prune import count_macs

    plan = MODEL_PLANS["resnet20"]
    t_start = time.perf_counter()
    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    ctx = zc.context()
    base = zc.ready_baseline(ctx)
    data = ctx.data
    ex = data.test.images[:2]
    models: dict[str, tuple[nn.Module, nn.Module]] = {"dense": (base, zc.int8(base, ctx, 0).eval())}
    info: dict[str, Any] = {}
    for amount in plan["widths"]:
        m = zoo_structured(zc, ctx, base, amount, plan)
        tag = f"s{round(100 * amount)}"
        models[tag] = (m, zc.int8(m, ctx, 0).eval())
        info[f"structured {round(100 * amount)}%"] = {
            "width_removed": amount, "round_to": zc.ROUND_TO, "params": sum(p.numel() for p in m.parameters()),
            "params_baseline": sum(p.numel() for p in base.parameters()), "macs": count_macs(m, ex[:1]),
            "macs_baseline": count_macs(base, ex[:1]), "channels": channel_counts(m),
            "conv_widths": sorted({c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)})}
    calib = data.train.images[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:1024]]
    np.save(ZOO_DIR / "calib.npy", calib.numpy())
    np.save(ZOO_DIR / "images.npy", data.val.images[:256].numpy())  # timing inputs: validation images
    variants: dict[str, dict[str, Any]] = {}
    for tag, (m, q) in models.items():
        label = "dense" if tag == "dense" else f"structured {tag[1:]}%"
        # the timing workers' pickled module: its own name, never the fine-tuned checkpoint's stem (s30.pt)
        torch.save(m, ZOO_DIR / f"module_{tag}.pt")
        (ZOO_DIR / f"fp32_{tag}.onnx").write_bytes(onnx_model(m, example=ex).SerializeToString())
        (ZOO_DIR / f"int8_{tag}.onnx").write_bytes(onnx_model(q, example=ex).SerializeToString())
        variants.update({
            BASELINE_KEY if tag == "dense" else f"fp32 {label} PyTorch": {"kind": "torch", "path": f"module_{tag}.pt",
                                                                          "ref": m},
            f"fp32 {label} ONNX Runtime": {"kind": "ort", "path": f"fp32_{tag}.onnx", "ref": m},
            f"int8 {label} ONNX Runtime (QDQ)": {"kind": "ort", "path": f"int8_{tag}.onnx", "ref": q},
            f"int8 {label} torch.ao FX": {"kind": "torchao", "path": f"module_{tag}.pt", "ref": m}})
    finetune = {**plan["finetune"], "images": len(data.train), "seed": plan["finetune_seed"]}
    table = accuracy_table(variants, {"val": data.val, "test": data.test}, ZOO_DIR)
    timed = time_variants(variants, table, args.rounds)
    best, eligible = choose_variant(table, timed, plan["budget_pp"])
    structs = [n for n in timed if "structured" in n]
    best_struct = max(structs, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"])
    struct_ok = [n for n in structs if n in eligible]
    write_results("deploy_resnet20", {
        "model": "resnet20", "dataset": "fashion-mnist", "recipe": BASELINE_RECIPES["resnet20@fashion-mnist"],
        "command": f"python benchmarks/deploy.py --model resnet20 --rounds {args.rounds}",
        "baseline_val_accuracy": table[BASELINE_KEY]["val_accuracy"],
        "baseline_test_accuracy": table[BASELINE_KEY]["test_accuracy"],
        "structured": info, "structured_finetune": finetune,
        "earlier_runs": earlier_runs(RESULTS / "deploy_resnet20.json", finetune),
        "best_variant": best, "best_throughput_ratio": table[best]["throughput_ratio_vs_fp32_pytorch"],
        "best_variant_val_loss_pp": table[best]["val_loss_pp"],
        "best_variant_accuracy_loss_pp": table[best]["accuracy_loss_pp"],
        "best_variant_test_accuracy": table[best]["test_accuracy"],
        "best_variant_meets_target_ratio": table[best]["throughput_ratio_vs_fp32_pytorch"] >= plan["target_ratio"],
        "best_structured_within_budget": (max(struct_ok, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"])
                                          if struct_ok else None),
        "best_structured_variant": best_struct,
        "best_structured_throughput_ratio": table[best_struct]["throughput_ratio_vs_fp32_pytorch"],
        "best_structured_accuracy_loss_pp": table[best_struct]["accuracy_loss_pp"],
        "target_ratio": plan["target_ratio"], "budget_pp": plan["budget_pp"],
        "selection_rule": (f"fixed before the run: among every variant but '{BASELINE_KEY}', those whose "
                           f"validation accuracy (6,000 images) is at most {plan['budget_pp']} pp below the "
                           "baseline's; the highest median throughput ratio wins; its test accuracy (10,000 "
                           "images) is measured once"),
        "eligible_on_validation": eligible,
        "onnx_top1_agreement": min(table[n]["top1_agreement_with_pytorch_source"] for n in timed if "ONNX" in n),
        "variants": table,
        "timing": f"{args.rounds} rounds, variants interleaved (rotated order), each measurement in its own "
                  f"process with {THREADS} threads under the timing lock; medians; ratio = median of per-round "
                  f"ratios to '{BASELINE_KEY}'; inputs: 256 validation images",
        "seconds": time.perf_counter() - t_start,
    })


def resnet20_seeds(args: argparse.Namespace) -> None:
    """``--seeds-of-best``: the ResNet-20 table's chosen variant, its structured model fine-tuned again from the same
    pruned network with each extra seed (the timed run's seed is the plan's), exported as the chosen variant was and
    measured through the same runtime on validation and test; mean and spread of its losses over all the seeds go
    into deploy_resnet20.json. Nothing here chooses anything: the variant was chosen on validation by the run."""
    import zoo_compress as zc
    from crosslayer.encode.onnx_export import onnx_model

    path = RESULTS / "deploy_resnet20.json"
    done = json.loads(path.read_text())
    best, plan = done["best_variant"], MODEL_PLANS["resnet20"]
    amount = next((a for a in plan["widths"] if f" structured {round(100 * a)}% " in f" {best} "), None)
    if amount is None:
        raise SystemExit(f"{best!r} has no structured fine-tune of its own; its accuracy does not vary with a seed")
    t_start = time.perf_counter()
    ctx = zc.context()
    base = zc.ready_baseline(ctx)
    ex = ctx.data.test.images[:2]
    torch.save(base, ZOO_DIR / "module_dense.pt")
    baseline = {BASELINE_KEY: {"kind": "torch", "path": "module_dense.pt", "ref": base}}
    first = done["variants"][best]
    runs = [{"seed": plan["finetune_seed"], "timed_run": True,
             **{k: first[k] for k in ("val_accuracy", "test_accuracy", "val_loss_pp", "accuracy_loss_pp")}}]
    for seed in args.seeds_of_best:
        m = zoo_structured(zc, ctx, base, amount, plan, seed=seed)
        q = zc.int8(m, ctx, 0).eval()
        tag = f"s{round(100 * amount)}_seed{seed}"
        torch.save(m, ZOO_DIR / f"module_{tag}.pt")
        (ZOO_DIR / f"fp32_{tag}.onnx").write_bytes(onnx_model(m, example=ex).SerializeToString())
        (ZOO_DIR / f"int8_{tag}.onnx").write_bytes(onnx_model(q, example=ex).SerializeToString())
        kind = first["kind"]
        file = {"torch": f"module_{tag}.pt", "torchao": f"module_{tag}.pt",
                "ort": f"{'int8' if best.startswith('int8') else 'fp32'}_{tag}.onnx"}[kind]
        name = f"{best} (seed {seed})"
        table = accuracy_table({**baseline, name: {"kind": kind, "path": file,
                                                   "ref": q if kind == "ort" and best.startswith("int8") else m}},
                               {"val": ctx.data.val, "test": ctx.data.test}, ZOO_DIR)
        if abs(table[BASELINE_KEY]["test_accuracy"] - done["baseline_test_accuracy"]) > 1e-12:
            raise SystemExit("the cached baseline differs from the one of deploy_resnet20.json; re-run the table")
        runs.append({"seed": seed, "timed_run": False, **{k: table[name].get(k) for k in (
            "val_accuracy", "test_accuracy", "val_loss_pp", "accuracy_loss_pp", "error")}})
    merge_results("deploy_resnet20", {"best_variant_over_seeds": {
        **over_seeds(best, "the chosen variant's structured fine-tune repeated with other seeds (same pruned network, "
                           "recipe and int8 calibration); the timed run is the plan's seed", runs),
        "seconds": time.perf_counter() - t_start}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--widths", type=float, nargs="*", help="structured widths removed (default: the model plan)")
    ap.add_argument("--recovery-epochs", type=int, default=20, help="recovery training after structured pruning")
    ap.add_argument("--recovery-lr", type=float, default=0.01, help="initial (cosine) learning rate of the recovery")
    ap.add_argument("--fuzz", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", choices=sorted(MODEL_PLANS), default="lenet5")
    ap.add_argument("--seeds-of-best", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="ResNet-20: repeat the chosen variant's fine-tune with these seeds (comma-separated)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.seeds_of_best is not None:
        if args.model != "resnet20":
            raise SystemExit("--seeds-of-best is implemented for --model resnet20")
        torch.set_num_threads(THREADS)
        resnet20_seeds(args)
        return
    if args.model == "resnet20":
        torch.set_num_threads(THREADS)
        resnet20_main(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(THREADS)
    from crosslayer.data import load_splits
    from crosslayer.encode import pack_model, unpack_model
    from crosslayer.encode.onnx_export import onnx_model
    from crosslayer.models import build_model
    from crosslayer.prune import count_macs
    from crosslayer.quant import QuantizeConfig, quantize
    from crosslayer.train import TrainConfig, evaluate, fit_cached, within_budget

    t_start = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    DIR.mkdir(parents=True, exist_ok=True)
    data = load_splits("mnist", None, train_limit=2000 if args.quick else 10000,
                       test_limit=1000 if args.quick else None, seed=0)
    bcfg = TrainConfig(**{**BASELINE_CFG, "epochs": 2 if args.quick else 20})
    base = baseline_model("lenet5", 0)
    fit_cached("lenet5", base, data.train, data.val, bcfg, seed=0, desc="baseline lenet5")
    base.eval()
    base_acc = evaluate(base, data.test).accuracy
    res: dict[str, Any] = {"command": " ".join(["python benchmarks/deploy.py", *sys.argv[1:]]),
                           "seed": 0, "baseline_training": {**dataclasses.asdict(bcfg), "seed": 0},
                           "baseline_accuracy": base_acc, "load_average_start": list(os.getloadavg())}

    # 1. the packed file of the compressed LeNet-5
    comp_path = WORK / "compression" / f"lenet5_compressed{suffix}.pt"
    if not comp_path.is_file():
        raise SystemExit(f"{comp_path} is missing: run benchmarks/compression.py{' --quick' if args.quick else ''}")
    compressed = torch.load(comp_path, map_location="cpu", weights_only=False).eval()
    blob, acct = pack_model(compressed, torch.zeros(1, *data.input_shape))
    (DIR / "lenet5.xlm").write_bytes(blob)
    unpacked = unpack_model(blob)
    packed_acc = evaluate(unpacked, data.test).accuracy
    res.update({"packed_bytes": len(blob), "packed_kb": len(blob) / 1024, "dense_fp32_bytes":
                4 * sum(p.numel() for p in base.parameters()), "packed_bits_by_part": acct["total_bits"],
                "packed_accuracy": packed_acc, "packed_accuracy_loss_pp": 100 * (base_acc - packed_acc),
                "compressed_accuracy": evaluate(compressed, data.test).accuracy})

    # 2. structured pruning at several widths, each recovered with the baseline recipe, then int8 PTQ
    plan = MODEL_PLANS["lenet5"]
    widths = (0.5, 0.7) if args.quick else tuple(args.widths or plan["widths"])
    recovery_epochs = 1 if args.quick else args.recovery_epochs
    res["settings"] = {"rounds": args.rounds, "widths_removed": list(widths), "recovery_epochs": recovery_epochs,
                       "recovery_lr": args.recovery_lr, "fuzz_inputs": 200 if args.quick else args.fuzz,
                       "threads": THREADS, "quick": args.quick, "train_images": len(data.train),
                       "val_images": len(data.val), "test_images": len(data.test)}
    q8 = QuantizeConfig(mode="ptq", weight_bits=8, act_bits=8)
    base_q = quantize(base, q8, data, seed=0).model.eval()
    structs: dict[str, dict[str, Any]] = {}
    for width in widths:
        t0 = time.perf_counter()
        m = structured_candidate(base, data, width, epochs=recovery_epochs,
                                 lr=args.recovery_lr, path=DIR / f"struct{int(100 * width)}{suffix}.pt")
        ex = data.train.images[:1]
        tag = f"structured {int(100 * width)}%"
        structs[tag] = {"model": m, "int8": quantize(m, q8, data, seed=0).model.eval(), "info": {
            "width_removed": width, "params": sum(p.numel() for p in m.parameters()),
            "params_baseline": sum(p.numel() for p in base.parameters()), "macs": count_macs(m, ex),
            "macs_baseline": count_macs(base, ex), "channels": channel_counts(m), "seconds": time.perf_counter() - t0}}

    # 3. artefacts for the timing workers
    calib = data.train.images[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:1024]]
    np.save(DIR / "calib.npy", calib.numpy())
    np.save(DIR / "images.npy", data.val.images[:256].numpy())  # timing inputs: validation images
    pruned_fp32 = build_model("lenet5")
    pstate = torch.load(WORK / "compression" / f"lenet5_prune{suffix}.pt", map_location="cpu", weights_only=True)
    pruned_fp32.load_state_dict(pstate["state_dict"])
    pruned_fp32.eval()
    models = {"base": base, "pruned": pruned_fp32, **{f"s{int(100 * v['info']['width_removed'])}": v["model"]
                                                       for v in structs.values()}}
    for k, m in models.items():
        torch.save(m, DIR / f"{k}.pt")
    (DIR / "fp32_dense.onnx").write_bytes(onnx_model(base).SerializeToString())
    (DIR / "int8_dense.onnx").write_bytes(onnx_model(base_q).SerializeToString())
    variants: dict[str, dict[str, Any]] = {
        BASELINE_KEY: {"kind": "torch", "path": "base.pt", "ref": base},
        "fp32 dense ONNX Runtime": {"kind": "ort", "path": "fp32_dense.onnx", "ref": base},
        "int8 dense ONNX Runtime (QDQ)": {"kind": "ort", "path": "int8_dense.onnx", "ref": base_q},
        "int8 dense torch.ao FX": {"kind": "torchao", "path": "base.pt", "ref": base},
    }
    for tag, v in structs.items():
        key = f"s{int(100 * v['info']['width_removed'])}"
        (DIR / f"fp32_{key}.onnx").write_bytes(onnx_model(v["model"]).SerializeToString())
        (DIR / f"int8_{key}.onnx").write_bytes(onnx_model(v["int8"]).SerializeToString())
        variants.update({
            f"fp32 {tag} PyTorch": {"kind": "torch", "path": f"{key}.pt", "ref": v["model"]},
            f"fp32 {tag} ONNX Runtime": {"kind": "ort", "path": f"fp32_{key}.onnx", "ref": v["model"]},
            f"int8 {tag} ONNX Runtime (QDQ)": {"kind": "ort", "path": f"int8_{key}.onnx", "ref": v["int8"]},
            f"int8 {tag} torch.ao FX": {"kind": "torchao", "path": f"{key}.pt", "ref": v["model"]}})
    variants.update({
        "fp32 unstructured dense kernels PyTorch": {"kind": "torch", "path": "pruned.pt", "ref": pruned_fp32},
        "fp32 unstructured torch.sparse CSR fc": {"kind": "torch_sparse", "path": "pruned.pt", "ref": pruned_fp32},
        "fp32 unstructured SciPy CSR fc": {"kind": "scipy_sparse", "path": "pruned.pt", "ref": pruned_fp32},
    })

    # 4. accuracy on validation (for the choice) and test (for the record), agreement with the PyTorch source
    table = accuracy_table(variants, {"val": data.val, "test": data.test}, DIR)
    base_val, base_test = table[BASELINE_KEY]["val_accuracy"], table[BASELINE_KEY]["test_accuracy"]

    # 5. interleaved timing, one process per measurement
    timed = time_variants(variants, table, args.rounds)
    best, eligible = choose_variant(table, timed, BUDGET_PP)
    structs_timed = [n for n in timed if "structured" in n and "unstructured" not in n]
    best_struct = max(structs_timed, key=lambda n: table[n]["throughput_ratio_vs_fp32_pytorch"])
    onnx_names = [n for n in timed if "ONNX" in n]
    res.update({
        "structured": {tag: v["info"] for tag, v in structs.items()},
        "best_variant": best, "best_throughput_ratio": table[best]["throughput_ratio_vs_fp32_pytorch"],
        "best_variant_val_loss_pp": table[best]["val_loss_pp"],
        "best_variant_accuracy_loss_pp": table[best]["accuracy_loss_pp"],
        "best_variant_test_accuracy": table[best]["test_accuracy"],
        "best_variant_within_budget_on_test": within_budget(table[best]["accuracy_loss_pp"], BUDGET_PP),
        "best_variant_meets_target_ratio": table[best]["throughput_ratio_vs_fp32_pytorch"] >= plan["target_ratio"],
        "target_ratio": plan["target_ratio"], "budget_pp": BUDGET_PP,
        "baseline_val_accuracy": base_val, "baseline_test_accuracy": base_test,
        "selection_rule": (f"fixed before the run: among every variant but '{BASELINE_KEY}', those whose "
                           f"validation accuracy (1,000 images) is at most {BUDGET_PP} pp below the baseline's; the "
                           "highest median throughput ratio wins; its test accuracy (10,000 images) is measured once"),
        "eligible_on_validation": eligible,
        "best_structured_variant": best_struct,
        "best_structured_throughput_ratio": table[best_struct]["throughput_ratio_vs_fp32_pytorch"],
        "best_structured_accuracy_loss_pp": table[best_struct]["accuracy_loss_pp"],
        "onnx_top1_agreement": min(table[n]["top1_agreement_with_pytorch_source"] for n in onnx_names),
        "onnx_top1_agreement_note": "minimum over the ONNX Runtime variants of the share of the 10k test "
                                    "images whose top-1 equals that of the PyTorch model it was exported from",
        "variants": table,
        "timing": f"{args.rounds} rounds, variants interleaved (rotated order), each measurement in its own "
                  f"process with {THREADS} threads; medians; ratio = median of per-round ratios to "
                  f"'{BASELINE_KEY}'; inputs: validation images; peak_rss_mb = the measuring process's peak "
                  "resident memory (runtime, model, session), working_mb = its rise while building and timing",
        "other_models": {"resnet20": "benchmarks/deploy.py --model resnet20 (results/deploy_resnet20.json)"},
    })

    # 6. the chosen variant's accuracy over recovery seeds (headline mean and spread; seed 0 is the run above)
    res["best_variant_over_seeds"] = (best_variant_seeds(best, variants, structs, table, base, data, args)
                                      if not args.quick else {"skipped": "quick"})

    # 7. fuzz the reader
    t0 = time.perf_counter()
    fz = fuzz_reader(blob, 200 if args.quick else args.fuzz)
    res.update({"fuzz_inputs": fz["inputs"], "fuzz_failures": len(fz["failures"]), "fuzz": fz,
                "fuzz_seconds": time.perf_counter() - t0})
    res["seconds"] = time.perf_counter() - t_start
    res["load_average_end"] = list(os.getloadavg())
    write_results("deploy" + suffix, res)


if __name__ == "__main__":
    main()
