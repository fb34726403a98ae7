"""Render the figures sections of the docs from benchmarks/results/*.json.

Each doc keeps its hand-written prose; the figures sit between ``<!-- results:NAME begin -->`` and
``<!-- results:NAME end -->`` markers and are rewritten from the results files (see benchmarks/_docgen.py).

    .venv/bin/python benchmarks/render_docs.py --check    # list every doc block that disagrees with its file
    .venv/bin/python benchmarks/render_docs.py --write    # rewrite the blocks from the results files

``--check`` exits 1 when a doc and its results file disagree (tests/foundation/test_docs_from_results.py runs
the same check). Run ``--write`` after a benchmark re-wrote its results file.
"""

from __future__ import annotations

import argparse
import sys

import _docs_compression as comp
import _docs_hw as hw
import _docs_imc as imc
import _docs_memory as mem
import _docs_modules as mod
import _docs_protocol as proto
import _docs_search as srch
import _docs_zoo as zoo
from _docgen import Block, check, write

BLOCKS: tuple[Block, ...] = (
    Block(doc="docs/benchmarks.md", name="compression", sources=("compression",), render=comp.compression,
          headline=("compression", ("lenet5", "joint_accuracy_loss_pp"))),
    Block(doc="docs/benchmarks.md", name="deploy", sources=("deploy",), render=comp.deploy,
          headline=("deploy", ("best_structured_accuracy_loss_pp",))),
    Block(doc="docs/prune.md", name="prune-schedule", sources=("compression",), render=comp.prune_schedule,
          headline=("compression", ("lenet300", "prune_steps", 8, "test_loss_pp"))),
    Block(doc="docs/prune.md", name="prune-seeds", sources=("prune_seeds", "prune_to95"), render=comp.prune_seeds,
          headline=("prune_seeds", ("runs", "2", "kept_test_loss_pp"))),
    Block(doc="docs/imc.md", name="imc", sources=imc.IMC_SOURCES, render=imc.imc,
          headline=("imc", ("variation_grid", 2, "gap_aware_pp"))),
    Block(doc="docs/imc.md", name="imc-seeds", sources=imc.SEED_SOURCES, render=imc.imc_seeds,
          headline=("imc_seed2", ("variation_grid", 0, "drop_standard_pp"))),
    Block(doc="docs/imc.md", name="imc-aihwkit", sources=imc.IMC_SOURCES, render=imc.imc_aihwkit,
          headline=("imc", ("aihwkit_comparison", "noisy_rms_error_ratio_crosslayer_over_aihwkit"))),
    Block(doc="docs/memory.md", name="memories", sources=("memories",), render=mem.memories,
          headline=("memories", ("models", "lenet5", "curves", "kc705b-28nm-probit", "summary", "adapted",
                                 "test_mean_over_seeds", "mean"))),
    Block(doc="docs/quant.md", name="quant", sources=("quant",), render=mod.quant,
          headline=("quant", ("lenet5", "qat4_accuracy"))),
    Block(doc="docs/resilience.md", name="resilience", sources=("resilience",), render=mod.resilience,
          headline=("resilience", ("equal", "speedup"))),
    Block(doc="docs/approx.md", name="approx", sources=("approx",), render=mod.approx,
          headline=("approx", ("selected_accuracy_loss", "mean"))),
    Block(doc="docs/security.md", name="security", sources=("security",), render=mod.security,
          headline=("security", ("pgd40_eps0.1", "art_success"))),
    Block(doc="docs/protocol.md", name="protocol-baselines", sources=proto.BASELINE_SOURCES, render=proto.baselines,
          headline=("approx", ("float_test_accuracy",))),
    Block(doc="docs/protocol.md", name="protocol-records", sources=proto.RECORD_SOURCES, render=proto.records,
          headline=("imc", ("command",))),
    Block(doc="docs/hw.md", name="hw-speed", sources=("hardware",), render=hw.speed,
          headline=("hardware", ("speed_full_layer_costs_per_second", "mnist_models", "tpu", "search"))),
    Block(doc="docs/hw.md", name="hw-scalesim", sources=("hardware",), render=hw.scalesim,
          headline=("hardware", ("scalesim_total_cycle_error_with_stalls",))),
    Block(doc="docs/hw.md", name="hw-zigzag", sources=("hardware",), render=hw.zigzag,
          headline=("hardware", ("independent_energy_ratio_median",))),
    Block(doc="docs/hw.md", name="hw-timing", sources=("hardware",), render=hw.timing,
          headline=("hardware", ("speedup_vs_scalesim",))),
    Block(doc="docs/hw.md", name="hw-energy", sources=("hardware",), render=hw.energy,
          headline=("hardware", ("tpu_best_energy_ratio",))),
    Block(doc="docs/search.md", name="search", sources=("search",), render=srch.search,
          headline=("search", ("energy_gain_vs_sequential",))),
    Block(doc="docs/models.md", name="zoo-baselines", sources=("baseline",), render=zoo.zoo_baselines,
          headline=("baseline", ("fashion_resnet20", "test_accuracy"))),
    Block(doc="docs/models.md", name="zoo-compress", sources=("zoo_compress",), render=zoo.zoo_compress,
          headline=("zoo_compress", ("structured_timing", "speedup"))),
    Block(doc="docs/models.md", name="deploy-resnet20", sources=("deploy_resnet20",), render=zoo.deploy_resnet20,
          headline=("deploy_resnet20", ("best_throughput_ratio",))),
    Block(doc="docs/models.md", name="zoo", sources=("zoo",), render=zoo.zoo,
          headline=("zoo", ("resnet20", "seconds"))),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare the docs with the results files")
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks")
    args = ap.parse_args(argv)
    if args.write:
        changed = write(BLOCKS)
        print("rewrote " + ", ".join(changed) if changed else "every generated block is up to date")
        return 0
    problems = check(BLOCKS)
    for p in problems:
        print(p)
    if not problems:
        print(f"{len(BLOCKS)} generated blocks agree with their results files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
