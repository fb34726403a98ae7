"""Quantization figures on the MNIST split of the LeNet benchmarks (9,000 train / 1,000 val / 10,000 test) for
LeNet-5 and LeNet-300-100 against the shared baselines (``BASELINE_RECIPES``, seed 0, from the training cache:
the same models as every other LeNet benchmark):

- 8-bit PTQ of weights and activations, 4-bit weights and activations with QAT, ternary (TWN) weights
  with STE fine-tuning (``crosslayer.quant.measure.quant_measurements``), and PyTorch's own int8 PTQ as the peer,
  each over the seeds ``--seeds`` (calibration subset, fine-tuning order): mean, spread and every seed kept;
- the whole-network bit-width sweep (PTQ, validation accuracy, budget 0.1 pp) for the X-DNNs comparison (seed 0);
- the wall time of the ``quantize`` flow stage in the default demo settings (LeNet-5).

    python benchmarks/quant.py [--models lenet5,lenet300] [--seeds 0,1,2] [--no-sweep] [--no-stage]

Writes benchmarks/results/quant.json (only the models of this run: earlier runs are not merged in).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, shared_mnist_baseline, spread, write_results
from crosslayer.quant import QuantizeConfig, bit_sweep
from crosslayer.quant.measure import MeasureConfig, quant_measurements

MEASURES = ("ptq8", "qat4", "ternary")
DEMO = QuantizeConfig(weight_bits=8, act_bits=8, sweep=True, sweep_bits=(16, 12, 8, 6, 4, 3, 2))


def _stage_seconds(model: Any, name: str) -> dict[str, Any]:
    """Run baseline (given weights) + quantize in a flow; the quantize stage's seconds and metrics."""
    import tomli_w
    import torch

    from crosslayer.config import to_mapping
    from crosslayer.flow import load_flow_config, run_flow

    settings = {k: v for k, v in to_mapping(DEMO).items() if k in ("weight_bits", "act_bits", "sweep", "sweep_bits")}
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "w.pt"
        torch.save(model.state_dict(), w)
        toml = Path(tmp) / "flow.toml"
        toml.write_text(tomli_w.dumps({"flow": {"model": name, "train_limit": 10000, "weights": str(w),
                                                "stages": ["baseline", "quantize"]}, "quantize": settings}))
        reports = run_flow(load_flow_config(toml), Path(tmp) / "run")
    rep = reports[-1]
    keys = ("test_accuracy", "compression_ratio", "sweep_lossless_bits", "sweep_per_layer_bits")
    return {"seconds": rep.seconds, **{k: rep.metrics.get(k) for k in keys}, "settings": settings}


def _torch_ao_ptq8(model: Any, data: Any, seed: int = 0) -> dict[str, Any]:
    """Peer: PyTorch's own int8 static PTQ (FX graph mode, x86 qconfig, real int8 kernels) on the same
    1,024 calibration images (the same seeded subset our calibration draws)."""
    import copy
    import warnings

    import torch

    from crosslayer.train import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        t0 = time.perf_counter()
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:1024]
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                              (data.train.images[:1],))
        with torch.no_grad():
            for i in range(0, len(order), 128):
                prepared(data.train.images[order[i:i + 128]])
        converted = convert_fx(prepared)
        seconds = time.perf_counter() - t0
        acc = evaluate(converted, data.test).accuracy
    return {"accuracy": acc, "seconds": seconds, "settings": "torch.ao FX, x86 default qconfig (per-channel "
            "symmetric int8 weights, affine uint8 activations with histogram observer)"}


def measure_seeds(model: Any, data: Any, seeds: list[int]) -> dict[str, Any]:
    """Every measurement and the peer over ``seeds``: per key the mean (the headline), its spread, every run."""
    runs = []
    for s in seeds:
        r = quant_measurements(model, data, seed=s, cfg=MeasureConfig())
        peer = _torch_ao_ptq8(model, data, seed=s)
        r["peer_torch_ao_int8"] = {**peer, "accuracy_loss_pp": 100 * (r["baseline_accuracy"] - peer["accuracy"])}
        runs.append({"seed": s, **r})
        print(s, {k: v for k, v in r.items() if "loss_pp" in k}, flush=True)
    out: dict[str, Any] = {"baseline_accuracy": runs[0]["baseline_accuracy"], "seeds": seeds}
    for k in MEASURES:
        out[f"{k}_accuracy"] = statistics.mean(r[f"{k}_accuracy"] for r in runs)
        out[f"{k}_accuracy_loss_pp"] = statistics.mean(r[f"{k}_accuracy_loss_pp"] for r in runs)
        out[f"{k}_accuracy_loss_pp_spread"] = spread([r[f"{k}_accuracy_loss_pp"] for r in runs])
        out[f"{k}_compression_ratio"] = runs[0][f"{k}_compression_ratio"]
        out[f"{k}_seconds"] = statistics.median(r[f"{k}_seconds"] for r in runs)
        out[f"{k}_settings"] = runs[0][f"{k}_settings"]
    peers = [r["peer_torch_ao_int8"] for r in runs]
    out["peer_torch_ao_int8"] = {"accuracy": statistics.mean(p["accuracy"] for p in peers),
                                 "accuracy_loss_pp": statistics.mean(p["accuracy_loss_pp"] for p in peers),
                                 "accuracy_loss_pp_spread": spread([p["accuracy_loss_pp"] for p in peers]),
                                 "seconds": statistics.median(p["seconds"] for p in peers),
                                 "settings": peers[0]["settings"]}
    out["runs"] = runs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,lenet300")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the measurements (comma-separated)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-stage", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    flags = [f"--models {args.models}", f"--seeds {args.seeds}", *(["--no-sweep"] if args.no_sweep else []),
             *(["--no-stage"] if args.no_stage else [])]
    out: dict[str, Any] = {"command": "python benchmarks/quant.py " + " ".join(flags)}
    for name in args.models.split(","):
        t0 = time.perf_counter()
        data, model, trained = shared_mnist_baseline(name)
        out["data"] = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
        res: dict[str, Any] = {"baseline_training": {**BASELINE_RECIPES[name], "seed": 0},
                               "baseline_cached": trained.cached}
        res.update(measure_seeds(model, data, seeds))
        if not args.no_sweep:
            sweep_cfg = dataclasses.replace(DEMO, sweep_per_layer=False, sweep_bits=(16, 12, 10, 8, 6, 5, 4, 3, 2))
            sw = bit_sweep(model, data, sweep_cfg, seed=0)
            res["sweep_val_reference_accuracy"] = sw.reference_accuracy
            res["sweep_val"] = {p.bits: p.accuracy for p in sw.points}
            res["sweep_lossless_bits_ptq"] = sw.whole_net_bits
        if not args.no_stage and name == "lenet5":
            res["quantize_stage"] = _stage_seconds(model, name)
        res["seconds"] = time.perf_counter() - t0
        out[name] = res
    write_results("quant", out)


if __name__ == "__main__":
    main()
