"""The default flow, every stage, on the built-in models beyond LeNet: the "Measured" part of issue 15 that is not
compression (benchmarks/zoo_compress.py holds that). One section per model with every stage's headline metrics
and the per-layer table of what every stage did with each layer, or that it left it and why.

    python benchmarks/zoo.py                      # ResNet-20 and MobileNetV2 (Fashion-MNIST), LeNet-5 (MNIST)
    python benchmarks/zoo.py --models resnet20    # one section (the others are kept from the last run)
    python benchmarks/zoo.py --smoke              # the pipeline on 500 images with untrained models (nothing kept)

Protocol (fixed before any run):

- every model starts from its cached baseline (``BASELINE_RECIPES`` through ``fit_cached``: the same trained model
  as benchmarks/baseline.py and benchmarks/zoo_compress.py), handed to the flow as ``[flow] weights``; the data
  split is the flow's own full split (Fashion-MNIST 54,000 / 6,000 / 10,000, MNIST 9,000 / 1,000 / 10,000) so the
  validation images are the ones the baseline never trained on;
- the flow is ``src/crosslayer/flows/default.toml`` with the overrides of ``LIGHT`` below for every model alike:
  the test split is measured on its first ``TEST_LIMIT`` images, fine-tunings use fixed training subsets, and
  the sweeps are shortened, so that the three flows together stay under an hour on 2 cores (ResNet-20 costs
  about 18x the MACs of LeNet-5 per image);
- the per-layer table is read from the stages' own per-layer report tables: a layer a stage does not list is
  reported as not handled by that stage, with the stage's reason where its table gives one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, RESULTS, ROOT, WORK, write_results

STATE = WORK / "zoo"
DEFAULT_FLOW = ROOT / "src" / "crosslayer" / "flows" / "default.toml"
MODELS: dict[str, tuple[str, str, str]] = {  # section -> (model, dataset, BASELINE_RECIPES key)
    "resnet20": ("resnet20", "fashion-mnist", "resnet20@fashion-mnist"),
    "mobilenetv2": ("mobilenetv2-0.5", "fashion-mnist", "mobilenetv2-0.5@fashion-mnist"),
    "lenet5": ("lenet5", "mnist", "lenet5"),
}
# The training seed of each cached baseline: MobileNetV2's current recipe was set after test figures of earlier
# ones had been seen, so its baseline is a fresh seed's training (benchmarks/baseline.py --zoo mobilenetv2 --seed 3).
BASELINE_SEEDS = {"mobilenetv2": 3}
TEST_LIMIT = 2000
NOT_LISTED = "-"  # the stage's per-layer table does not list the layer: the stage left it as it is
LIGHT: dict[str, dict[str, Any]] = {
    "prune": {"finetune_limit": 5000, "finetune_epochs": 1},
    "quantize": {"sweep_bits": [8, 6, 4]},
    "explore": {"sparsities": [0.5, 0.8], "bits": [8, 4], "finetune_limit": 2000},
    "resilience": {"test_subset": 200, "bits": [7, 6], "injections": 10, "bers": [1e-3], "ber_trials": 1,
                   "noise_trials": 1},
    "approximate": {"select_limit": 500, "test_limit": 1000},
    "memory": {"chips": 1, "select_limit": 500, "test_limit": 1000, "adapt_limit": 1000, "adapt_max_voltages": 1},
    "imc": {"sigmas": [0.0, 0.5], "adc_bits_sweep": [4, 8], "aware_epochs": 1, "aware_limit": 2000,
            "seeds": 1, "eval_limit": 500},
    "security": {"images": 200, "eps": [0.0, 0.05, 0.1], "defence_images": 100, "table_images": 5},
    "detect": {"sequences": 1, "frames": 20},
    "search": {"trials": 6, "startup_trials": 3, "trial_train_limit": 500, "trial_val_limit": 300,
               "final_points": 1, "final_train_limit": 1000},
}
# Per-layer tables of the stages: (stage, table title prefix, column shown).
LAYER_TABLES: tuple[tuple[str, str, str], ...] = (
    ("prune", "Per-layer sparsity", "sparsity"),
    ("quantize", "Quantized layers", "weights"),
    ("encode", "Storage per weight", "format"),
    ("resilience", "Gaussian noise on layer outputs", "mean drop pp"),
    ("approximate", "Chosen assignment", "multiplier"),
    ("hardware", "Workload", "MACs"),
    ("imc", "Crossbar cost per layer", "tiles"),
)


def export_baseline(section: str, smoke: bool) -> Path | None:
    """The cached baseline's state dict as a weights file for the flow (None in a smoke run: the flow trains)."""
    if smoke:
        return None
    import torch

    from crosslayer.flow import FlowConfig, build_context
    from crosslayer.train import TrainConfig, fit_cached

    model, dataset, key = MODELS[section]
    seed = BASELINE_SEEDS.get(section, 0)
    ctx = build_context(None, FlowConfig(model=model, dataset=dataset, seed=seed, device="cpu", stages=("baseline",)))
    res = fit_cached(model, ctx.model, ctx.data.train, ctx.data.val, TrainConfig(**BASELINE_RECIPES[key]), seed=seed,
                     desc=f"{model} baseline", max_epochs=0)
    if not res.finished:
        raise SystemExit(f"the {model} baseline is not trained yet: benchmarks/baseline.py --zoo {model} --seed {seed}")
    path = STATE / section / "baseline.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ctx.model.state_dict(), path)
    return path


def flow_toml(section: str, weights: Path | None, smoke: bool) -> dict[str, Any]:
    doc = tomllib.loads(DEFAULT_FLOW.read_text())
    model, dataset, _ = MODELS[section]
    doc["flow"].update({"model": model, "dataset": dataset, "device": "cpu", "test_limit": TEST_LIMIT})
    if weights is not None:
        doc["flow"]["weights"] = str(weights)
    for stage, over in LIGHT.items():
        doc.setdefault(stage, {}).update(over)
    if smoke:
        doc["flow"].update({"train_limit": 500, "test_limit": 200})
        doc["baseline"].update({"epochs": 1})
    return doc


def layer_table(reports: dict[str, dict[str, Any]], layers: list[tuple[str, str]]) -> dict[str, Any]:
    """Rows: every layer with parameters; columns: what each stage's per-layer table says of it."""
    found: dict[str, dict[str, Any]] = {}
    for stage, prefix, column in LAYER_TABLES:
        rep = reports.get(stage)
        table = next((t for t in (rep or {}).get("tables", []) if t["title"].startswith(prefix)), None)
        if table is None:
            continue
        col = table["columns"].index(column)
        cells: dict[str, Any] = {}
        for row in table["rows"]:
            name = str(row[0]).removesuffix(".weight")
            cells.setdefault(name, row[col])
        found[stage] = cells
    rows = []
    for name, kind in layers:
        row: dict[str, Any] = {"layer": name, "kind": kind}
        for stage, _, _ in LAYER_TABLES:
            if stage in found:
                row[stage] = found[stage].get(name, NOT_LISTED)
        rows.append(row)
    return {"columns": ["layer", "kind", *[s for s, _, _ in LAYER_TABLES if s in found]], "rows": rows}


def model_layers(section: str) -> list[tuple[str, str]]:
    """The compute layers of the section's model (Conv2d, Linear, attention, LayerNorm) with their kind; batch
    norms are not rows (every stage treats them with the conv before them)."""
    from torch import nn

    from crosslayer.models import build_model

    m = build_model(MODELS[section][0], num_classes=10, in_channels=1, image_size=28)
    rows = []
    for name, mod in m.named_modules():
        if isinstance(mod, nn.Conv2d):
            k = f"{mod.kernel_size[0]}x{mod.kernel_size[1]}"
            kind = (f"depthwise conv {k}" if mod.groups == mod.in_channels > 1 else
                    f"grouped conv {k} ({mod.groups} groups)" if mod.groups > 1 else f"conv {k}")
        elif isinstance(mod, nn.Linear | nn.MultiheadAttention | nn.LayerNorm):
            kind = type(mod).__name__
        else:
            continue
        rows.append((name, kind))
    return rows


def run_section(section: str, smoke: bool) -> dict[str, Any]:
    import tomli_w

    out = STATE / ("smoke" if smoke else "runs") / section
    weights = export_baseline(section, smoke)
    cfg = STATE / f"{section}{'_smoke' if smoke else ''}.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    doc = flow_toml(section, weights, smoke)
    cfg.write_text(tomli_w.dumps(doc))
    cmd = [str(Path(sys.executable).parent / "crosslayer"), "flow", str(cfg), "--out", str(out), "--force"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    reports = {p.stem: json.loads(p.read_text()) for p in sorted((out / "reports").glob("*.json"))
               if p.stem not in ("index", "summary")}
    stages = {name: {"seconds": r.get("seconds"), "headline": r.get("headline", {}),
                     "metrics": {k: v for k, v in r.get("metrics", {}).items()
                                 if isinstance(v, int | float | str | bool) or v is None},
                     "notes": r.get("notes", [])}
              for name, r in reports.items()}
    model, dataset, key = MODELS[section]
    return {"model": model, "dataset": dataset, "recipe": BASELINE_RECIPES.get(key),
            "baseline_seed": BASELINE_SEEDS.get(section, 0), "exit_code": proc.returncode,
            "stderr_tail": proc.stderr[-3000:] if proc.returncode else "", "seconds": seconds,
            "command": " ".join(["crosslayer", *cmd[1:]]).replace(f"{ROOT}/", ""),
            "config": doc,
            "stages_run": list(reports), "stages": stages,
            "layers": layer_table(reports, model_layers(section))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    previous = RESULTS / "zoo.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() and not args.smoke else {}
    results.setdefault("protocol", {"test_limit": TEST_LIMIT, "light": LIGHT, "flow": str(DEFAULT_FLOW.name)})
    for section in args.models:
        res = run_section(section, args.smoke)
        print(json.dumps({k: res[k] for k in ("model", "exit_code", "seconds", "stages_run")}), flush=True)
        if res["exit_code"]:
            print(res["stderr_tail"], flush=True)
        results[section] = res
    results["total_seconds"] = sum(results[s]["seconds"] for s in MODELS if s in results)
    if args.smoke:
        print(json.dumps({s: results[s]["layers"] for s in args.models}, indent=1, default=str)[:6000])
        return
    write_results("zoo", results)


if __name__ == "__main__":
    main()
