"""How much of a quantized LeNet-5's energy its pooling layers carry, with pooling data at the width of the layer
they feed (the cost model's rule) against pooling at the accelerator's float width (the rule before it).

Designs of the co-design search's space (benchmarks/search.py: the cached LeNet-5 baseline, Eyeriss, zeros of
weights and activations skipped, activation sparsity from the same 64 validation images), built with
calibration only (no fine-tuning: energy depends on the masks and bit widths, not on accuracy): the most
aggressive design of the space (98 % sparsity, 2-bit weights, 4-bit activations everywhere), the grid's
uniform designs and the dense int8 model. The float-width figure re-costs the same workload with the pooling
layers' widths set to the accelerator's reference bits.

    .venv/bin/python benchmarks/pool_width.py

Writes benchmarks/results/pool_width.json.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results

DESIGNS = {"most aggressive (0.98, w2, a4)": (0.98, 2, 4), "grid (0.95, w4, a8)": (0.95, 4, 8),
           "grid (0.9, w6, a8)": (0.9, 6, 8), "dense int8": (0.0, 8, 8)}


def main() -> None:
    import torch

    import search as bench
    from crosslayer.explore.search_eval import FineTune, build_design
    from crosslayer.explore.search_space import Design, LayerChoice, search_layers
    from crosslayer.hw import SparsityConfig, cost_workload
    from crosslayer.hw.workload import extract_workload

    torch.set_num_threads(1)
    data, model = bench.lenet()
    hw = bench.hardware(data)
    acc = hw.accelerator
    sparsity = SparsityConfig(skip=hw.skip, index_bits=hw.index_bits)  # type: ignore[arg-type]
    rows: dict[str, Any] = {}
    for label, (s, wb, ab) in DESIGNS.items():
        design = Design({n: LayerChoice(s, wb, ab) for n in search_layers(model)})
        built = build_design(model, design, data, FineTune(epochs=0))
        wl = extract_workload(built.quantized, hw.inputs, float_bits=acc.reference_bits)
        at_float = tuple(dataclasses.replace(x, act_bits=acc.reference_bits, weight_bits=acc.reference_bits)
                         if x.kind == "pool" else x for x in wl)
        row = {}
        for rule, workload in (("fed_layer_width", wl), ("float_width", at_float)):
            cost = cost_workload(workload, acc, sparsity=sparsity)
            pools = sum(float(e) for name, e in zip(cost.layers, cost.energy, strict=True)
                        if next(x for x in workload if x.name == name).kind == "pool")
            row[rule] = {"energy": cost.total_energy, "pooling_energy": pools,
                         "pooling_share": pools / cost.total_energy,
                         "pool_bits": {x.name: x.act_bits for x in workload if x.kind == "pool"}}
        rows[label] = row
        print(label, {r: round(v["energy"] / 1e6, 3) for r, v in row.items()}, flush=True)
    write_results("pool_width", {"model": "lenet5 (benchmarks/search.py baseline)", "accelerator": acc.name,
                                 "reference_bits": acc.reference_bits, "designs": rows,
                                 "command": "python benchmarks/pool_width.py"})


if __name__ == "__main__":
    main()
