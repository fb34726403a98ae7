"""The hardware-aware co-design search (crosslayer.explore.search) on LeNet-5 / MNIST and the Eyeriss preset.

    python benchmarks/search.py                    # every part, then benchmarks/results/search.json
    python benchmarks/search.py --part hv          # one part (hv, final, workers, resume, resnet, corner)
    python benchmarks/search.py --assemble         # only write the results file from the finished parts

Setup, fixed before any run: LeNet-5 trained with BASELINE_RECIPES["lenet5"] (cached) on the 10k MNIST subset (9,000
train / 1,000 validation / 10,000 test); objectives accuracy and energy per inference (Eyeriss, zeros of weights and
activations skipped); every trial (all three methods alike) gets one epoch of quantization-aware fine-tuning on
2,000 training images and is scored on the first 500 validation images. Budget: 60 trials per study (the issue's
example is 100; 60 keeps the whole benchmark well under an hour of CPU on 2 cores and equals the grid's 60 points),
seeds 12 to 17 (15, 16, 17 added after the 12-14 figures, settings unchanged). The search and random studies start
from the same four uniform anchor designs (WARM_START: three grid points and one with half of every channel group
cut; they count in the 60 trials). Their space (SPACE) offers 3- to 8-bit activations, since the sequential flow's
per-layer sweep gives a layer's activations its weights' width, down to 3 bits, and per channel group a cut of up to
75 % of its channels (structured pruning before the weights are pruned). The sequential flow may cut channels too
(the ``+channels`` rules). Earlier runs, each disclosed in docs/search.md: seeds 0, 1, 2 were measured before the
cost model moved a quantized model's pooling data at the width of the layer it feeds (it moved them at 16 bits);
seeds 3, 4, 5 ran with that fix but without anchors, with only the fixed budget split for the sequential flow (which
then stopped pruning at its first step in two seeds) and with a seed's out-of-budget fallback point counted in the
gain; seeds 6, 7, 8 offered the search 4- to 8-bit activations only and finished up to 4 Pareto points with 3 epochs
each, against the up to 10 epochs (5 pruning steps x 2) the sequential flow fine-tunes on the same images; seeds 9,
10, 11 had no channel cuts on either side, three anchors and finals of 10 epochs (the results file keeps the
headline figures of seeds 6-8 and 9-11 under ``earlier_runs``). Each change came after those runs' test figures were
seen, so these figures come from fresh seeds. Seeds 12, 13, 14 first ran on an earlier LeNet-5 training of the same
recipe (before the training cache keyed the starting weights) and were re-run, settings unchanged, on the reference
training; a run on another baseline training keeps the old headline under ``earlier_runs`` too, with the baseline it
ran on (``why_kept``).

- **hv**: hypervolume of each study's trials in (accuracy loss in pp on the trial images, energy / E_ref),
  reference point (2 pp, 1.0) where E_ref is the dense int8 model's energy (exact multipliers): the region
  better than plain 8-bit quantization within 2 pp. Methods: the search (multi-objective TPE), random search
  (same space), and the existing grid sweep (``explore``: 3 schemes x sparsities 0.5, 0.7, 0.8, 0.9, 0.95 x
  weight bits 8, 6, 5, 4, 8-bit activations, exact multipliers: 60 points). Medians over the seeds.
- **final**: each seed's search finishes its Pareto set (up to 6 points within 1.5 pp on the trial images, 20
  epochs of QAT on all 9,000 training images); the reported point is the cheapest within 0.5 pp on the whole
  validation split; it is then measured once on the test split. The sequential flow, per seed, with the same
  0.5 pp validation budget: prune (the default flow's iterative schedule), then quantize (the quantize stage's
  per-layer bit-width sweep, 8-3 bits, PTQ), then approximate (greedy, 8x8 multipliers on the 8-bit layers,
  observed loss within budget as for the search), under four rules: ``split`` (0.2 / 0.15 / 0.15 pp) and
  ``greedy`` (each step what the steps before it left), each also with ``+channels`` (the prune step first cuts
  channels with the prune stage's structured schedule, 25 / 50 / 60 / 70 / 75 % of every group, 2 epochs per
  step, within the prune step's budget, then prunes weights with what that left of it); the reported one is the
  cheapest of those within budget on validation. energy_gain_vs_sequential = sequential energy / search
  energy, over the seeds where both sides have a point within the budget on validation (median; per seed kept,
  None where a side has none).
- **workers**: the same 12 enqueued designs run with 1 worker (1 thread) and with 2 forked workers (1 thread
  each), 5 interleaved rounds; medians of the trial-phase wall time (first trial start to last trial end).
- **resume**: a 12-trial search in a child process is killed (SIGKILL) after 5 complete trials and restarted;
  resume_lost_trials counts the trials that did not complete.
- **corner**: the energy of the space's most compressed design (every layer at max_sparsity, the narrowest
  weight and activation widths, every channel group cut by max_channel_cut, no fine-tuning; its accuracy is
  not a result) and each seed's sequential validation energy divided by it: the largest gain any design of the
  space could show against the sequential flow. A part whose job files are not on this machine keeps its
  figures from the results file (``kept_from_earlier_run``).
- **resnet**: ResNet-20 on Fashion-MNIST, the cached baseline of benchmarks/zoo_compress.py (full split: 54,000
  train / 6,000 validation / 10,000 test); ``RESNET``: 24 trials (1 epoch of QAT on 2,000 training images,
  scored on 500 validation images), up to 2 finished points (2 epochs on 10,000 images, chosen on the whole
  validation split, measured once on test), the first three trials the uniform anchors of
  ``RESNET["warm_start"]``, the trial learning rate chosen first on the trial images (``resnet_trial_lr``): a
  smaller budget, one seed. Three earlier studies found no trial within 1.5 pp on the trial images and finished
  nothing (kept as first_attempts): 10 trials on 500 / 200 images, then these settings without anchors, then
  with anchors but LeNet-5's trial learning rate, which cost the 8-bit unpruned anchor 8 pp.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASELINE_RECIPES, RESULTS, WORK, peak_rss_mb, same_test_count, shared_mnist_baseline, write_results

JOBS = WORK / "search"
MNIST_TEST_IMAGES = 10_000  # the official test split every LeNet-5 baseline accuracy is measured on
# Fresh seeds (the earlier runs are listed in the docstring); 15, 16, 17 added, settings unchanged, after seeing
# the 12-14 figures on the reference training, to measure the spread of the gain (the 12-14 headline is kept).
SEEDS = (12, 13, 14, 15, 16, 17)
# The search and random space: 3- to 8-bit activations (the library default starts at 4), as the sequential flow's
# per-layer sweep reaches 3-bit activations (fixed before the seeds 9-11 run), and per channel group up to 75 % of
# the channels cut by structured pruning (fixed before the seeds 12-14 run).
SPACE = {"act_bits": (3, 4, 5, 6, 8), "max_channel_cut": 0.75}
# Three grid points, and (seeds 12-14) one with half the channels of every group cut, for the search and random
# studies.
WARM_START = ((0.8, 8, 8), (0.9, 6, 8), (0.95, 4, 8), (0.8, 6, 8, 0.5))
N_TRIALS = 60
TRIAL = {"trial_epochs": 1, "trial_train_limit": 2000, "trial_val_limit": 500, "lr": 1e-3, "hw_samples": 64}
# Finals: 20 epochs, the most the sequential flow's pruning fine-tunes (with "+channels": 5 channel steps and 5
# weight steps x 2 epochs, same images; seeds 9-11 had 10, before the channel steps); 6 points, since a finished
# point costs seconds on LeNet-5. Fixed before the seeds 12-14 run.
FINAL = {"final_points": 6, "final_epochs": 20, "final_train_limit": 0, "final_slack_pp": 1.0, "budget_pp": 0.5}
GRID = {"grid_schemes": ("class-blind", "class-uniform", "class-distribution"),
        "grid_sparsities": (0.5, 0.7, 0.8, 0.9, 0.95), "grid_bits": (8, 6, 5, 4), "grid_act_bits": 8}
HV_REF_LOSS_PP = 2.0
SEQ_BUDGETS = (0.2, 0.15, 0.15)
SEQ_RULES = ("split", "greedy", "split+channels", "greedy+channels")
# The sequential flow's channel step (rules "+channels", seeds 12-14): the prune stage's structured schedule, the
# fraction of channels removed from every group, up to the search's max_channel_cut.
SEQ_CHANNEL_TARGETS = (0.25, 0.5, 0.6, 0.7, 0.75)
WORKER_ROUNDS, WORKER_TRIALS = 5, 12
RESUME_TRIALS, RESUME_KILL_AFTER = 12, 5
METHODS = {"search": "tpe", "random": "random", "grid": "grid"}
# ResNet-20: the third settings. Two studies without anchors (10 trials of 1 epoch on 500 images scored on 200,
# then RESNET without warm_start) found no trial within 1.5 pp on the trial images, so nothing was finished
# or tested; both are kept under "first_attempts". These settings add three uniform anchor designs.
RESNET = {"trials": 24, "startup_trials": 8, "trial_train_limit": 2000, "trial_val_limit": 500, "hw_samples": 16,
          "final_points": 2, "final_epochs": 2, "final_train_limit": 10000, "final_slack_pp": 1.0, "budget_pp": 0.5,
          "warm_start": ((0.0, 8, 8), (0.3, 8, 8), (0.5, 6, 8)), "act_bits": (4, 5, 6, 8),
          "max_channel_cut": 0.0}  # its run's space
# The third study also lost 6-8 pp on its 8-bit unpruned anchor: the trial fine-tune (Adam, lr 1e-3, the LeNet-5
# setting) damages the batch-normalised ResNet-20, so its learning rate is chosen first (resnet_trial_lr).
RESNET_TRIAL_LRS = (1e-3, 3e-4, 1e-4, 3e-5)
SMOKE = os.environ.get("CROSSLAYER_SEARCH_BENCH_SMOKE") == "1"  # a tiny run of every part, to check the script
if SMOKE:
    JOBS = WORK / "search-smoke"
    N_TRIALS, WORKER_ROUNDS, WORKER_TRIALS, RESUME_TRIALS, RESUME_KILL_AFTER = 4, 1, 4, 6, 2
    TRIAL = {**TRIAL, "trial_epochs": 0, "trial_train_limit": 300, "trial_val_limit": 100}
    FINAL = {**FINAL, "final_points": 1, "final_epochs": 0, "final_train_limit": 300, "final_slack_pp": 100.0}
    GRID = {**GRID, "grid_schemes": ("class-blind",), "grid_sparsities": (0.5, 0.9), "grid_bits": (8, 4)}


# ----- shared setup ------------------------------------------------------------------------------------------

def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def lenet() -> tuple[Any, Any]:
    """The MNIST splits and the cached LeNet-5 baseline (BASELINE_RECIPES["lenet5"], seed 0)."""
    data, model, _ = shared_mnist_baseline("lenet5")
    return data, model


def config(sampler: str, **kw: Any) -> Any:
    from crosslayer.explore.search import SearchConfig

    return SearchConfig(**{"objectives": ("accuracy", "energy"), "sampler": sampler, "trials": N_TRIALS,
                           "final_points": 0, **TRIAL, **GRID, **SPACE, **kw})


def hardware(data: Any) -> Any:
    from crosslayer.explore.search_eval import HardwareTarget
    from crosslayer.hw import load_accelerator

    return HardwareTarget(load_accelerator("eyeriss"), data.val.images[:TRIAL["hw_samples"]], skip="both")


def _db(name: str) -> Path:
    JOBS.mkdir(parents=True, exist_ok=True)
    return JOBS / f"{name}.db"


def _measured(m: Any) -> dict[str, Any]:
    return m.to_json()


def _final_json(p: Any) -> dict[str, Any]:
    return {"trial": p.trial, "design": p.design.to_json(), "val": _measured(p.val), "test": _measured(p.test),
            "val_loss_pp": p.val_loss_pp, "test_loss_pp": p.test_loss_pp}


# ----- jobs (each writes JOBS/<name>.json; a finished job is not run again) --------------------------------

def job_reference() -> dict[str, Any]:
    """Baseline accuracies and energies: the float model at the accelerator's precision and the dense int8 model."""
    from crosslayer.explore.search_eval import measure_model
    from crosslayer.quant import QuantizeConfig, quantize
    from crosslayer.train import evaluate

    data, model = lenet()
    hw = hardware(data)
    q = quantize(model, QuantizeConfig(weight_bits=8, act_bits=8), data, seed=0).model
    int8 = measure_model(q, {}, data.val, hw)
    from crosslayer.explore.search_eval import hardware_cost

    e16, lat16 = hardware_cost(model, {}, "min-energy", hw)
    return {"val_accuracy": evaluate(model, data.val).accuracy, "test_accuracy": evaluate(model, data.test).accuracy,
            "trial_val_accuracy": evaluate(model, data.val.subset(TRIAL["trial_val_limit"])).accuracy,
            "energy_float_at_16_bits": e16, "latency_ms_float": lat16, "energy_int8_dense": int8.energy,
            "int8_dense_val_accuracy": int8.accuracy}


def job_corner() -> dict[str, Any]:
    """The energy of the search space's most compressed design: every layer at ``max_sparsity`` with the narrowest
    weight and activation widths of the space, every channel group cut by ``max_channel_cut`` (exact multipliers,
    each layer on its least-energy dataflow), pruned and quantized from the baseline without fine-tuning. Energy
    depends on the zero pattern and widths, not on accuracy, so this is the lowest energy the space offers at any
    accuracy (up to the activation densities, which fine-tuning moves a little); dividing the sequential flow's
    energy by it gives the largest gain any design of the space could show against that flow. Its accuracy is not a
    result."""
    from crosslayer.explore.search import build_space
    from crosslayer.explore.search_eval import FineTune, build_design, measure
    from crosslayer.hw import load_accelerator

    data, model = lenet()
    hw = hardware(data)
    cfg = config("random")
    space = build_space(model, cfg, load_accelerator("eyeriss").dataflows, example_input=data.train.images[:1])
    widths = (cfg.max_sparsity, min(cfg.weight_bits), min(cfg.act_bits), cfg.max_channel_cut)
    design = space.decode(space.uniform_params(*widths))
    built = build_design(model, design, data, FineTune(0, cfg.lr, cfg.batch_size), seed=0)
    m = measure(built, data.val, hw)
    return {"design": design.to_json(), "sparsity": m.sparsity, "energy": m.energy,
            "what": "every layer at the space's max_sparsity, narrowest weight and activation bits, every channel "
                    "group cut by max_channel_cut, exact multipliers, no fine-tuning; energy only (accuracy not a "
                    "result)",
            "space": {"max_sparsity": cfg.max_sparsity, "weight_bits": list(cfg.weight_bits),
                      "act_bits": list(cfg.act_bits), "max_channel_cut": cfg.max_channel_cut}}


def job_study(method: str, seed: int) -> dict[str, Any]:
    from crosslayer.explore.search import search

    data, model = lenet()
    t0 = time.perf_counter()
    anchors = {"warm_start": WARM_START} if method != "grid" else {}
    res = search(model, config(METHODS[method], **anchors), data, seed=seed, storage=_db(f"{method}_seed{seed}"))
    return {"method": method, "seed": seed, "seconds": time.perf_counter() - t0, "counts": res.counts,
            "trials": [{"number": r.number, "state": r.state, "loss_pp": r.metrics.get("loss_pp"),
                        "energy": r.metrics.get("energy"), "accuracy": r.metrics.get("accuracy"),
                        "seconds": r.metrics.get("seconds")} for r in res.trials],
            "notes": res.notes, "peak_rss_mb": peak_rss_mb()}


def job_final(seed: int) -> dict[str, Any]:
    """The seed's search study (already run by job_study) finishes its Pareto set."""
    from crosslayer.explore.search import search

    data, model = lenet()
    t0 = time.perf_counter()
    res = search(model, config("tpe", **FINAL, warm_start=WARM_START), data, seed=seed,
                 storage=_db(f"search_seed{seed}"))
    return {"seed": seed, "seconds": time.perf_counter() - t0, "final": [_final_json(p) for p in res.final],
            "chosen": _final_json(res.chosen) if res.chosen else None, "baseline": res.baseline,
            "assignment": res.assignment, "notes": res.notes, "peak_rss_mb": peak_rss_mb()}


def job_sequential(seed: int) -> dict[str, Any]:
    """The sequential flow under each budget rule (SEQ_RULES); the reported one is the cheapest of those within
    the budget on validation (energy is deterministic; the test split chooses nothing)."""
    runs = {rule: _sequential(seed, rule) for rule in SEQ_RULES}
    ok = {r: v for r, v in runs.items() if v["val_loss_pp"] <= FINAL["budget_pp"] + 1e-9}
    pick = min(ok, key=lambda r: ok[r]["val"]["energy"]) if ok else min(runs, key=lambda r: runs[r]["val_loss_pp"])
    return {**runs[pick], "rule": pick, "rules": runs}


def _sequential(seed: int, rule: str) -> dict[str, Any]:
    """Prune, then quantize, then approximate. ``split``: each step its fixed share SEQ_BUDGETS of the validation
    budget; ``greedy``: each step whatever the steps before it left of FINAL["budget_pp"]. With ``+channels`` the
    prune step first cuts channels (the structured schedule, SEQ_CHANNEL_TARGETS, the whole prune budget), then
    prunes weights with what the channel cut left of the prune budget."""
    import torch

    from crosslayer.approx import (
        approximable_layers,
        greedy_select,
        layer_macs,
        library,
        per_layer_sweep,
        sensitivity_ranking,
    )
    from crosslayer.approx.select import as_accuracy, correct_on
    from crosslayer.explore.search_eval import measure_model
    from crosslayer.explore.search_space import MULTIPLIER_BITS
    from crosslayer.prune import ScheduleConfig, sparsify
    from crosslayer.quant import QuantizeConfig, quantize
    from crosslayer.quant.sweep import bit_sweep
    from crosslayer.train import evaluate

    data, model = lenet()
    hw = hardware(data)
    base_val, base_test = evaluate(model, data.val).accuracy, evaluate(model, data.test).accuracy
    budget = FINAL["budget_pp"]

    def left(acc: float) -> float:  # greedy: what is left of the budget after a step that reached ``acc``
        return max(0.0, budget - 100 * (base_val - acc))

    t0 = time.perf_counter()
    split = rule.split("+")[0] == "split"
    b_prune = SEQ_BUDGETS[0] if split else budget
    start, b_weights, cut = model, b_prune, None
    if rule.endswith("+channels"):
        cut = sparsify(model, ScheduleConfig(targets=SEQ_CHANNEL_TARGETS, structured=True, budget_pp=b_prune,
                                             finetune_epochs=2, finetune_lr=1e-3, optimizer="adam"), data, seed=seed)
        start = cut.model
        b_weights = max(0.0, b_prune - 100 * (base_val - evaluate(start, data.val).accuracy))
    pr = sparsify(start, ScheduleConfig(targets=(0.6, 0.8, 0.9, 0.93, 0.95), budget_pp=b_weights, finetune_epochs=2,
                                        finetune_lr=1e-3, optimizer="adam"), data, seed=seed)
    b_quant = SEQ_BUDGETS[1] if split else left(evaluate(pr.model, data.val).accuracy)
    sweep = bit_sweep(pr.model, data, QuantizeConfig(sweep_bits=(8, 6, 5, 4, 3), sweep_per_layer=True,
                                                     budget_pp=b_quant), seed=seed)
    bits = dict(sweep.combined_bits)
    q = quantize(pr.model, QuantizeConfig(mode="ptq", layer_weight_bits=bits, layer_act_bits=bits), data, seed=seed,
                 masks=pr.masks).model
    b_approx = SEQ_BUDGETS[2] if split else left(evaluate(q, data.val).accuracy)
    eight = [n for n in approximable_layers(q) if bits.get(n) == MULTIPLIER_BITS]
    score = correct_on(data.val)
    assignment: dict[str, str] = {}
    if eight and b_approx > 0:
        mults = library()
        ref = as_accuracy(score(q))
        ranking = sensitivity_ranking(per_layer_sweep(q, [m for m in mults if m.relative_power < 1], score,
                                                      layers=eight), ref)
        sel = greedy_select(q, mults, ranking, score, budget_pp=b_approx, macs=layer_macs(q, data.val.images[:1]),
                            confidence=0.5)
        assignment = {n: m.name for n, m in sel.assignment.items()}
    val, test = measure_model(q, assignment, data.val, hw), measure_model(q, assignment, data.test, hw)
    extra: dict[str, Any] = {}
    if cut is not None:
        out_channels = {n: int(m.weight.shape[0]) for n, m in pr.model.named_modules()
                        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
        extra["channel_cut"] = {"stop": cut.stop_reason, "kept_step": cut.kept_step, "out_channels": out_channels,
                                "weight_budget_pp": b_weights}
    return {"seed": seed, "seconds": time.perf_counter() - t0, "sparsity": pr.sparsity,
            "layer_sparsity": pr.layer_sparsity, "prune_stop": pr.stop_reason, "bits": bits,
            "assignment": assignment, "val": _measured(val), "test": _measured(test),
            "val_loss_pp": 100 * (base_val - val.accuracy), "test_loss_pp": 100 * (base_test - test.accuracy),
            "budgets_pp": [b_prune, b_quant, b_approx], "peak_rss_mb": peak_rss_mb(), **extra}


def _designs(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random designs' parameters of the search space (the same for both sides of the worker timing)."""
    import optuna

    from crosslayer.explore.search import build_space
    from crosslayer.hw import load_accelerator

    data, model = lenet()
    space = build_space(model, config("random"), load_accelerator("eyeriss").dataflows,
                        example_input=data.train.images[:1])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        space.suggest(t)
        out.append(dict(t.params))
        study.tell(t, 0.0)
    return out


def _timed_search(workers: int, name: str, designs: list[dict[str, Any]]) -> dict[str, Any]:
    import optuna

    from crosslayer.explore.search import search

    data, model = lenet()
    db = _db(name)
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        f.unlink(missing_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="search", directions=["maximize", "minimize"])
    for params in designs:
        study.enqueue_trial(params)
    cfg = config("random", trials=len(designs), workers=workers, threads=1 if workers == 1 else 0)
    t0 = time.perf_counter()
    res = search(model, cfg, data, seed=0, storage=db)
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name="search", storage=f"sqlite:///{db}").trials
    phase = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {"workers": workers, "wall_seconds": wall, "trial_phase_seconds": phase, "counts": res.counts,
            "pids": len({r.metrics.get("pid") for r in res.trials}),
            "peak_rss_mb_self": peak_rss_mb(),
            "peak_rss_mb_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}


def job_workers(round_: int) -> dict[str, Any]:
    designs = _designs(WORKER_TRIALS, seed=100)
    order = (1, 2) if round_ % 2 == 0 else (2, 1)  # interleaved: each side goes first in every other round
    return {"round": round_, "order": list(order),
            "runs": {str(w): _timed_search(w, f"workers{w}_round{round_}", designs) for w in order}}


def job_resume_run() -> dict[str, Any]:
    """The search the resume job kills and restarts (a child process)."""
    from crosslayer.explore.search import search

    data, model = lenet()
    res = search(model, config("tpe", trials=RESUME_TRIALS, heartbeat_s=2), data, seed=7, storage=_db("resume"))
    return {"counts": res.counts}


def job_resume() -> dict[str, Any]:
    import optuna

    db = _db("resume")
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        f.unlink(missing_ok=True)
    (JOBS / "resume-run.json").unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--job", "resume-run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    child = subprocess.Popen(cmd, env=env)
    before: list[Any] = []
    while child.poll() is None:
        time.sleep(0.5)
        try:
            before = optuna.load_study(study_name="search", storage=f"sqlite:///{db}").trials
        except Exception:  # the study is not created yet
            continue
        if sum(t.state.name == "COMPLETE" for t in before) >= RESUME_KILL_AFTER:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            break
    snapshot = [(t.number, t.state.name, t.values) for t in before]
    time.sleep(7)  # past the grace period (3 heartbeats of 2 s): the killed trial is stale
    subprocess.run(cmd, env=env, check=True)
    after = optuna.load_study(study_name="search", storage=f"sqlite:///{db}").trials
    kept = all(any(a.number == n and a.state.name == s and a.values == v for a in after)
               for n, s, v in snapshot if s == "COMPLETE")
    states = [t.state.name for t in after]
    return {"trials": RESUME_TRIALS, "killed_after_complete": RESUME_KILL_AFTER,
            "running_at_kill": sum(s == "RUNNING" for _, s, _ in snapshot), "states_after": states,
            "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
            "resume_lost_trials": RESUME_TRIALS - states.count("COMPLETE"), "completed_trials_kept": kept}


def resnet_trial_lr(model: Any, data: Any) -> dict[str, Any]:
    """The trial fine-tune's learning rate for ResNet-20, on the trial images only: the largest of
    RESNET_TRIAL_LRS whose trial fine-tune keeps the uniform 8-bit unpruned design within the budget of the
    baseline's trial accuracy (else the least damaging one); a learning rate that damages the uncompressed
    model would score every design low."""
    from crosslayer.data import DataSplits
    from crosslayer.explore.search import build_space
    from crosslayer.explore.search_eval import FineTune, build_design
    from crosslayer.hw import load_accelerator
    from crosslayer.train import evaluate

    cfg = config("tpe", **RESNET)
    space = build_space(model, cfg, load_accelerator(cfg.accelerator).dataflows)
    design = space.decode(space.uniform_params(0.0, 8, 8))
    trial = DataSplits(data.train.subset(cfg.trial_train_limit), data.val.subset(cfg.trial_val_limit),
                       data.val.subset(cfg.trial_val_limit))
    base = evaluate(model, trial.val).accuracy
    rows = []
    for lr in RESNET_TRIAL_LRS:
        built = build_design(model, design, trial, FineTune(cfg.trial_epochs, lr, cfg.batch_size), seed=0)
        acc = evaluate(built.model, trial.val).accuracy
        rows.append({"lr": lr, "anchor_trial_accuracy": acc, "loss_pp": 100.0 * (base - acc)})
        print(json.dumps(rows[-1]), flush=True)
    ok = [r for r in rows if r["loss_pp"] <= cfg.budget_pp]
    chosen = max(ok, key=lambda r: r["lr"]) if ok else min(rows, key=lambda r: (r["loss_pp"], -r["lr"]))
    return {"baseline_trial_accuracy": base, "rows": rows, "chosen": chosen["lr"],
            "rule": "the largest learning rate whose trial fine-tune keeps the uniform 8-bit unpruned design within "
                    "budget_pp of the baseline on the trial images (else the least loss)"}


def job_resnet() -> dict[str, Any]:
    """ResNet-20 on Fashion-MNIST: a smaller budget (see the module docstring)."""
    import zoo_compress
    from crosslayer.explore.search import search
    from crosslayer.train import evaluate

    ctx = zoo_compress.context()      # the flow's full split and the cached baseline every ResNet-20 bench uses
    model = zoo_compress.ready_baseline(ctx)
    data = ctx.data
    recipe = BASELINE_RECIPES["resnet20@fashion-mnist"]
    source = "BASELINE_RECIPES['resnet20@fashion-mnist'] (cached; benchmarks/zoo_compress.py baseline)"
    t0 = time.perf_counter()
    pilot = resnet_trial_lr(model, data)
    cfg = config("tpe", **RESNET, lr=pilot["chosen"])
    res = search(model, cfg, data, seed=0, storage=_db("resnet20-d"))
    return {"model": "resnet20", "dataset": "fashion-mnist", "command": "python benchmarks/search.py --part resnet",
            "baseline_recipe": recipe, "baseline_source": source,
            "baseline_test_accuracy": evaluate(model, data.test).accuracy,
            "train_images": len(data.train), "val_images": len(data.val), "test_images": len(data.test),
            "settings": {**RESNET, "trial_epochs": TRIAL["trial_epochs"], "lr": pilot["chosen"], "seed": 0},
            "trial_lr_pilot": pilot,
            "first_attempts": _resnet_first_attempts(),
            "seconds": time.perf_counter() - t0, "counts": res.counts, "pareto": len(res.pareto),
            "baseline": res.baseline, "final": [_final_json(p) for p in res.final],
            "chosen": _final_json(res.chosen) if res.chosen else None, "notes": res.notes,
            "peak_rss_mb": peak_rss_mb()}


JOB_FUNCS: dict[str, Callable[[], dict[str, Any]]] = {"reference": job_reference, "resume": job_resume,
                                                      "resume-run": job_resume_run, "resnet": job_resnet,
                                                      "corner": job_corner}
for _m in METHODS:
    for _s in SEEDS:
        JOB_FUNCS[f"study-{_m}-{_s}"] = lambda m=_m, s=_s: job_study(m, s)
for _s in SEEDS:
    JOB_FUNCS[f"final-{_s}"] = lambda s=_s: job_final(s)
    JOB_FUNCS[f"sequential-{_s}"] = lambda s=_s: job_sequential(s)
for _r in range(WORKER_ROUNDS):
    JOB_FUNCS[f"workers-{_r}"] = lambda r=_r: job_workers(r)

PARTS = {"hv": ["reference", *[f"study-{m}-{s}" for s in SEEDS for m in METHODS]],
         "final": [*[f"sequential-{s}" for s in SEEDS], *[f"final-{s}" for s in SEEDS]],
         "workers": [f"workers-{r}" for r in range(WORKER_ROUNDS)], "resume": ["resume"], "resnet": ["resnet"],
         "corner": ["corner"]}
SERIAL = {"workers", "resume"}  # timed parts own both cores
PART_KEYS = {"hv": ("hypervolume",), "final": ("energy_gain_vs_sequential", "sequential"),
             "workers": ("workers_speedup",), "resume": ("resume_lost_trials",), "resnet": ("resnet20",),
             "corner": ("energy_corner",)}  # the results keys each part writes
SEED_KEYS = ("hypervolume", "energy_gain_vs_sequential", "energy_gain_per_seed", "energy_gain_spread",
             "energy_gain_seeds_counted", "search_chosen", "search_final_points", "sequential",
             "search_trials_within_slack")


def _resnet_first_attempts() -> list[Any]:
    """The ResNet-20 attempts before the current settings (module docstring): from their job files, or, where those
    are not on this machine, as the results file recorded them, so a re-run never drops them."""
    recorded = None
    if (RESULTS / "search.json").is_file():
        recorded = json.loads((RESULTS / "search.json").read_text()).get("resnet20", {}).get("first_attempts")
    jobs = [_done("resnet-first-attempt"), _done("resnet-second-attempt")]
    if isinstance(recorded, list) and len(recorded) == 3:
        jobs = [j if j is not None else r for j, r in zip(jobs, recorded[:2], strict=True)]
    return [*jobs, {"settings": {**RESNET, "lr": TRIAL["lr"]}, "stopped": "by hand after 18 of 24 trials: its 8-bit "
                    "unpruned anchor scored 84.8 % against the baseline's 93.0 % on the trial images, so no trial "
                    "could come within 1.5 pp"}]


def _done(name: str) -> dict[str, Any] | None:
    path = JOBS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_job(name: str) -> None:
    _threads()
    os.environ.setdefault("CROSSLAYER_NO_PROGRESS", "1")
    out = JOB_FUNCS[name]()
    from crosslayer.fileio import atomic_write_json

    atomic_write_json(JOBS / f"{name}.json", out)


def run_part(part: str) -> None:
    """The part's unfinished jobs, two at a time in child processes (one torch thread each), or one at a time."""
    if part == "final" and not all(_done(f"study-search-{s}") for s in SEEDS):
        raise SystemExit("the final part finishes the search studies: run --part hv first")
    todo = [j for j in PARTS[part] if _done(j) is None]
    width = 1 if part in SERIAL else 2
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def stop(signum: int, _frame: Any) -> None:  # a timeout or Ctrl-C ends the jobs too (they resume later)
        for _, p in running:
            p.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    while todo or running:
        while todo and len(running) < width:
            name = todo.pop(0)
            print(f"[search bench] {name}", flush=True)
            running.append((name, subprocess.Popen([sys.executable, __file__, "--job", name], env=env)))
        time.sleep(1)
        for name, p in list(running):
            if p.poll() is not None:
                running.remove((name, p))
                if p.returncode != 0:
                    raise SystemExit(f"job {name} failed with exit code {p.returncode}")


def _hv(study: dict[str, Any], e_ref: float) -> float:
    from crosslayer.explore.hypervolume import hypervolume_2d

    pts = [[t["loss_pp"], t["energy"] / e_ref] for t in study["trials"] if t["state"] == "COMPLETE"]
    return hypervolume_2d(pts, [HV_REF_LOSS_PP, 1.0])


def _study_trials(db: Path) -> list[dict[str, Any]]:
    """Every trial of a stored study: number, state, trial accuracy, loss against the baseline, energy."""
    import optuna

    if not db.is_file():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{db}")
    return [{"number": t.number, "state": t.state.name, "accuracy": t.user_attrs.get("accuracy"),
             "loss_pp": t.user_attrs.get("loss_pp"), "energy": t.user_attrs.get("energy"),
             "sparsity": t.user_attrs.get("sparsity")} for t in study.trials]


def _keep_earlier(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` plus the keys of the existing results file that this assembly did not produce (parts whose job
    files are not on this machine, e.g. a fresh checkout that re-ran one part), listed under
    ``kept_from_earlier_run``; the energy corner is set against the sequential figures of the result."""
    path = RESULTS / "search.json"
    merged = out if SMOKE or not path.is_file() else _merge_earlier(out, json.loads(path.read_text()))
    corner = merged.get("energy_corner")
    if corner:
        corner["sequential_val_energy_over_corner"] = [s["val"]["energy"] / corner["energy"]
                                                       for s in merged.get("sequential", [])]
    return merged


def _other_training(old: Any, new: Any) -> bool:
    """Whether two runs' LeNet-5 baselines are different trainings: both recorded, a different count of correct
    images on the 10,000 MNIST test images."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    a, b = old.get("test_accuracy"), new.get("test_accuracy")
    return a is not None and b is not None and not same_test_count(float(a), float(b), MNIST_TEST_IMAGES)


def _merge_earlier(out: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``out`` over the earlier results ``old`` (see :func:`_keep_earlier`)."""
    earlier = list(old.get("earlier_runs", []))
    other_seeds = old.get("seeds") != out.get("seeds")
    other_training = _other_training(old.get("baseline"), out.get("baseline"))
    if (other_seeds or other_training) and "hypervolume" in old:  # a fresh run: the old one's headline is kept
        row = {k: old.get(k) for k in ("seeds", "space", "trial_settings", "final_settings", *SEED_KEYS)}
        if row["space"] is None:  # written before the file recorded its space: the library default's activations
            from crosslayer.explore.search_config import SearchConfig

            row["space"] = {"act_bits": list(SearchConfig().act_bits)}
        if other_training:
            row["baseline"] = old.get("baseline")
            row["why_kept"] = (f"{'the same seeds' if not other_seeds else 'other seeds'} on another LeNet-5 "
                               f"baseline training (test accuracy {old['baseline']['test_accuracy']:.4f}, now "
                               f"{out['baseline']['test_accuracy']:.4f})")
        else:
            row["why_kept"] = f"another set of seeds (this run: {', '.join(map(str, out.get('seeds') or []))})"
        earlier.append(row)
    skip = {"machine", "kept_from_earlier_run", "earlier_runs"}
    if other_seeds or other_training:
        skip.update(SEED_KEYS)  # never mix two runs' seeds or trainings
    kept = sorted(k for k in old if out.get(k) is None and k not in skip)
    order = [*(k for k in old if k in out or k in kept), *(k for k in out if k not in old)]  # the file's order
    merged = {k: old[k] if k in kept else out[k] for k in order}
    if earlier:
        merged["earlier_runs"] = earlier
    if kept:
        merged["kept_from_earlier_run"] = kept
        merged["parts_missing"] = [p for p in out["parts_missing"]
                                   if not any(k in kept for k in PART_KEYS.get(p, ()))]
    return merged


def assemble() -> None:
    ref = _done("reference")
    out: dict[str, Any] = {"model": "lenet5", "dataset": "mnist (9,000 train / 1,000 validation / 10,000 test)",
                           "accelerator": "eyeriss", "objectives": ["accuracy", "energy"], "trial_budget": N_TRIALS,
                           "seeds": list(SEEDS), "space": SPACE, "trial_settings": TRIAL, "final_settings": FINAL,
                           "grid": GRID,
                           "warm_start": [list(a) for a in WARM_START], "sequential_rules": list(SEQ_RULES),
                           "sequential_split_pp": list(SEQ_BUDGETS),
                           "sequential_channel_targets": list(SEQ_CHANNEL_TARGETS),
                           "baseline": ref, "baseline_training": BASELINE_RECIPES["lenet5"],
                           "command": "python benchmarks/search.py"}
    studies = {(m, s): _done(f"study-{m}-{s}") for m in METHODS for s in SEEDS}
    if ref and all(studies.values()):
        e_ref = ref["energy_int8_dense"]
        per = {m: [_hv(studies[(m, s)], e_ref) for s in SEEDS] for m in METHODS}  # type: ignore[arg-type]
        out["hypervolume"] = {**{m: statistics.median(v) for m, v in per.items()}, "per_seed": per,
                              "reference_point": {"loss_pp": HV_REF_LOSS_PP, "energy": e_ref,
                                                  "energy_normalised": 1.0,
                                                  "what": "energy of the dense int8 model, exact multipliers"},
                              "space": "loss in pp vs the baseline on the 500 trial validation images x energy / "
                                       "reference energy, both minimised",
                              "study_seconds": {m: [studies[(m, s)]["seconds"] for s in SEEDS] for m in METHODS}}
        # the trials the finals may pick from: complete, within budget + slack on the trial images
        slack = FINAL["budget_pp"] + FINAL["final_slack_pp"]
        out["search_trials_within_slack"] = [
            sum(t["state"] == "COMPLETE" and t["loss_pp"] is not None and t["loss_pp"] <= slack + 1e-9
                for t in studies[("search", s)]["trials"]) for s in SEEDS]  # type: ignore[index]
    finals = [_done(f"final-{s}") for s in SEEDS]
    seqs = [_done(f"sequential-{s}") for s in SEEDS]
    if all(finals) and all(seqs):
        # a seed counts only where both sides have a point within the budget on validation
        gains = [sq["test"]["energy"] / f["chosen"]["test"]["energy"]  # type: ignore[index]
                 if f["chosen"] and f["chosen"]["val_loss_pp"] <= FINAL["budget_pp"] + 1e-9  # type: ignore[index]
                 and sq["val_loss_pp"] <= FINAL["budget_pp"] + 1e-9 else None  # type: ignore[index]
                 for f, sq in zip(finals, seqs, strict=True)]
        ok = [g for g in gains if g is not None]
        out["energy_gain_vs_sequential"] = statistics.median(ok) if ok else None
        out["energy_gain_per_seed"] = gains
        out["energy_gain_spread"] = [min(ok), max(ok)] if ok else None
        out["energy_gain_seeds_counted"] = len(ok)
        out["search_chosen"] = [{"seed": f["seed"], **(f["chosen"] or {})} for f in finals]  # type: ignore[index]
        out["search_final_points"] = {f["seed"]: f["final"] for f in finals}  # type: ignore[index]
        out["sequential"] = seqs
        out["protocol"] = ("both sides choose on the validation split (budget 0.5 pp) and are measured once on "
                           "the test split; energy from the cost model (same accelerator, same activation images)")
    rounds = [_done(f"workers-{r}") for r in range(WORKER_ROUNDS)]
    if all(rounds):
        t1 = [r["runs"]["1"]["trial_phase_seconds"] for r in rounds]  # type: ignore[index]
        t2 = [r["runs"]["2"]["trial_phase_seconds"] for r in rounds]  # type: ignore[index]
        out["workers_speedup"] = statistics.median(t1) / statistics.median(t2)
        out["workers"] = {"trials": WORKER_TRIALS, "rounds": rounds, "median_seconds_1_worker": statistics.median(t1),
                          "median_seconds_2_workers": statistics.median(t2), "cpus": os.cpu_count(),
                          "what": "trial-phase wall time of the same enqueued designs; 1 worker with 1 torch thread "
                                  "vs 2 forked workers with 1 thread each"}
    res = _done("resume")
    if res:
        out["resume_lost_trials"] = res["resume_lost_trials"]
        out["resume"] = res
    rn = _done("resnet")
    if rn:
        # the trials as stored with the job when its study database is gone (a fresh checkout)
        out["resnet20"] = {**rn, "trials": _study_trials(_db("resnet20-d")) or rn.get("trials", [])}
    corner = _done("corner")
    if corner:
        out["energy_corner"] = corner  # its ratio to the sequential flow is set by _keep_earlier
    out["parts_missing"] = [p for p, jobs in PARTS.items() if not all(_done(j) for j in jobs)]
    out["cpu_note"] = ("jobs run two at a time in child processes with one torch thread each (workers and resume "
                       "alone), under the shared CPU lock")
    out = _keep_earlier(out)
    if SMOKE:
        print(json.dumps(out, indent=2, default=str))
        return
    write_results("search", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(PARTS), action="append", help="run only these parts (repeatable)")
    ap.add_argument("--job", choices=sorted(JOB_FUNCS), help=argparse.SUPPRESS)
    ap.add_argument("--assemble", action="store_true", help="only write the results file from finished parts")
    args = ap.parse_args()
    if args.job:
        run_job(args.job)
        return
    if not args.assemble:
        for part in args.part or list(PARTS):
            run_part(part)
    assemble()


if __name__ == "__main__":
    main()
