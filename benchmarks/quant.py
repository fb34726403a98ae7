"""Quantization figures on the full MNIST split (9,000 train / 1,000 val / 10,000 test) for LeNet-5 and
LeNet-300-100 against their own float baselines (the default flow's baseline training):

- 8-bit PTQ of weights and activations, 4-bit weights and activations with QAT, ternary (TWN) weights
  with STE fine-tuning (``crosslayer.quant.measure.quant_measurements``);
- the whole-network bit-width sweep (PTQ, validation accuracy, budget 0.1 pp) for the X-DNNs comparison;
- the wall time of the ``quantize`` flow stage in the default demo settings (LeNet-5).

    python benchmarks/quant.py [--models lenet5,lenet300] [--no-sweep] [--no-stage] [--weights lenet5=PATH]

``--weights`` loads a state dict (e.g. a training-cache entry of the same baseline training) instead of
training the baseline again.

Writes benchmarks/results/quant.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results
from crosslayer.data import load_splits
from crosslayer.models import build_model, load_weights
from crosslayer.quant import QuantizeConfig, bit_sweep
from crosslayer.quant.measure import MeasureConfig, quant_measurements
from crosslayer.train import TrainConfig, fit_cached

# the default flow's baseline training (src/crosslayer/flows/default.toml)
BASELINE = TrainConfig(epochs=8, batch_size=64, lr=0.05)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,lenet300")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-stage", action="store_true")
    ap.add_argument("--weights", action="append", default=[], help="NAME=PATH: trained weights of model NAME")
    args = ap.parse_args()
    given = dict(w.split("=", 1) for w in args.weights)
    data = load_splits("mnist", None, train_limit=10000, seed=0)
    out: dict[str, Any] = {"data": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                           "baseline_training": dataclasses.asdict(BASELINE)}
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model = build_model(name)
        if name in given:
            load_weights(model, given[name])
            res: dict[str, Any] = {"baseline_weights": given[name]}
        else:
            tr = fit_cached(name, model, data.train, data.val, BASELINE, seed=0, desc=f"baseline {name}")
            res = {"baseline_cached": tr.cached}
        model.eval()
        res.update(quant_measurements(model, data, seed=0, cfg=MeasureConfig()))
        peer = _torch_ao_ptq8(model, data)
        res["peer_torch_ao_int8"] = {**peer, "accuracy_loss_pp": 100 * (res["baseline_accuracy"] - peer["accuracy"])}
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
        print(name, {k: v for k, v in res.items() if "loss_pp" in k}, flush=True)
    previous = RESULTS / "quant.json"
    if previous.is_file():  # models not run this time keep their earlier figures
        old = json.loads(previous.read_text())
        out = {**{k: v for k, v in old.items() if k not in out and k != "machine"}, **out}
    write_results("quant", out)


if __name__ == "__main__":
    main()
