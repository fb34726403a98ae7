"""The search-mode cost model against its definitions on many random configurations (new bit widths, densities,
zero-skipping, relative power, buffer sizes at every call, as a co-design search calls it): the fast DRAM tiling
search against the exhaustive one, and ``evaluate_network`` / ``cost_workload`` against a per-option scalar
reference (every option of every layer and dataflow scored one by one, the best chosen as docs/hw.md defines
it), on LeNet-5, SmallVGG, the user-style models and user-style layers, both presets and both objectives."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hw_reference import option_cost, storage

from crosslayer.hw import cost_workload, evaluate_network, load_accelerator
from crosslayer.hw import tiling as tiling_mod
from crosslayer.hw.accelerator import Accelerator
from crosslayer.hw.costing import clear_caches
from crosslayer.hw.dataflows import ArrayCounts, option_table
from crosslayer.hw.errors import MappingError
from crosslayer.hw.shapes import LayerShape, conv, linear
from crosslayer.hw.sparsity import SparsityConfig
from crosslayer.hw.tiling import CASE_ORDER, shape_key, tilings_bits
from crosslayer.hw.tiling_grid import exhaustive_tilings
from crosslayer.hw.workload import extract_workload
from crosslayer.models import build_model

USER_STYLE = (
    conv("stem", 3, 16, 32, 3, padding=1),
    conv("res.conv1", 16, 16, 32, 3, padding=1, filter_nnz=tuple(10 + 8 * i for i in range(16))),
    conv("dw", 32, 32, 16, 3, padding=1, groups=32),                           # depthwise (MobileNet)
    conv("pw", 32, 64, 16, 1),                                                 # pointwise
    conv("se.fc1", 64, 4, 1, 1), conv("se.fc2", 4, 64, 1, 1),                  # squeeze-and-excitation
    conv("s2", 16, 24, 15, 1, stride=2), conv("k2s3", 8, 12, 20, 2, stride=3),  # kernel no taller than stride
    linear("attn.qkv", 64, 192),
    LayerShape(name="pool", kind="pool", in_channels=64, out_channels=64, in_h=16, in_w=16, kernel_h=2,
               kernel_w=2, stride=2, groups=64),
    linear("head", 64 * 8 * 8, 10),
)


def _workloads(user_model: Callable[..., torch.nn.Module]) -> dict[str, tuple[LayerShape, ...]]:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    wls = {name: extract_workload(build_model(name).eval(), x) for name in ("lenet5", "vgg-small")}
    for name in ("resnet_tiny", "mobilenet_tiny", "functional_cnn"):
        wls[name] = extract_workload(user_model(name).eval(), x)
    wls["user_style_layers"] = USER_STYLE
    return wls


def _variant(rng: random.Random, layers: tuple[LayerShape, ...]) -> tuple[LayerShape, ...]:
    return tuple(dataclasses.replace(s, weight_bits=rng.choice([2, 3, 4, 5, 6, 8, 16]),
                                     act_bits=rng.choice([2, 4, 6, 8, 16]),
                                     weight_density=rng.choice([1.0, 0.0, rng.uniform(0.01, 1.0)]),
                                     act_density=rng.choice([1.0, rng.uniform(0.05, 1.0)])) for s in layers)


def _accelerator(rng: random.Random) -> Accelerator:
    acc = load_accelerator(rng.choice(["eyeriss", "tpu"]))
    if rng.random() < 0.4:     # small buffers: spilling tilings, fewer RS mappings
        acc = dataclasses.replace(acc, glb_bytes=rng.choice([8192, 16384, 65536]),
                                  rf_bytes=rng.choice([acc.rf_bytes, 96, 160]))
    return acc


def _tiling(layer: LayerShape, acc: Accelerator, wr: float, ir: float, psum: int) -> tuple[object, ...] | int:
    """The exhaustive search's tiling: (order, m, p, c tiles, weight, input, output bits, first, last)."""
    t = exhaustive_tilings((shape_key(layer),), [layer.groups], np.array([layer.weight_bits * wr]),
                           np.array([layer.act_bits * ir]), np.array([float(layer.act_bits)]),
                           np.array([float(psum)]), acc.glb_bytes * 8)[0]
    return t if isinstance(t, int) else (CASE_ORDER[t[0]], *t[1:])


def _scalar_best(layer: LayerShape, acc: Accelerator, df: str, sp: SparsityConfig, power: float,
                 objective: str) -> tuple[float, int, dict[str, int], tuple[object, ...]]:
    """Every option of ``layer`` under ``df`` scored one by one, scalar by scalar (docs/hw.md's definition);
    the best under ``objective`` (the other key breaks ties, then the first option)."""
    st = storage(layer, acc, sp)
    psum = st.psum_bits
    tiling = _tiling(layer, acc, st.weight_ratio, st.input_ratio, psum)
    assert not isinstance(tiling, int)
    _order, _m, _p, _c, w_bits, i_bits, o_bits, first, last = tiling
    dram = (float(w_bits) + float(i_bits) + float(o_bits)) / acc.word_bits   # type: ignore[arg-type]
    exposed = (float(first) + float(last)) / acc.word_bits / acc.dram_bandwidth  # type: ignore[arg-type]
    table = option_table(layer, acc, df)
    best: tuple[float, float, int] | None = None
    scored: dict[int, tuple[float, int]] = {}
    for k in range(table.size):
        if df == "RS" and layer.kind != "pool":
            p, q, s = int(table.rs_p[k]), int(table.rs_q[k]), layer.kernel_w
            if p * q * s * layer.weight_bits + q * s * layer.act_bits + p * psum > acc.rf_bytes * 8:
                continue
        arr: ArrayCounts = table.column(k)
        energy, cycles = option_cost(layer, acc, arr, sp, st, dram, exposed, power)
        key = (energy, cycles, k) if objective == "energy" else (cycles, energy, k)
        scored[k] = (energy, cycles)
        if best is None or key < best:
            best = key
    assert best is not None
    k = best[2]
    return scored[k][0], scored[k][1], table.column(k).mapping, tiling


def test_fast_tiling_search_equals_the_exhaustive_search_on_random_configurations(
        user_model: Callable[..., torch.nn.Module]) -> None:
    rng = random.Random(0)
    layers = [s for wl in _workloads(user_model).values() for s in wl]
    checked = refused = 0
    for _ in range(6):
        acc = dataclasses.replace(_accelerator(rng), glb_bytes=rng.choice([16, 64, 256, 2048, 8192, 110592, 1 << 20]))
        for layer in _variant(rng, tuple(layers)):
            wr, ir = rng.choice([1.0, rng.uniform(0.05, 1.0)]), rng.choice([1.0, rng.uniform(0.05, 1.0)])
            psum = max(16, layer.act_bits)
            want = _tiling(layer, acc, wr, ir, psum)
            if isinstance(want, int):
                with pytest.raises(MappingError, match=f"smallest tile needs {want} bytes"):
                    tilings_bits([(layer, wr, ir, psum)], acc)
                refused += 1
            else:
                assert tilings_bits([(layer, wr, ir, psum)], acc)[0] == want, (layer, acc.glb_bytes, wr, ir)
                checked += 1
    assert checked > 200 and refused > 5  # both outcomes exercised


def test_exhaustive_fallback_gives_the_same_costs(monkeypatch: pytest.MonkeyPatch,
                                                  user_model: Callable[..., torch.nn.Module]) -> None:
    rng = random.Random(1)
    wls = _workloads(user_model)
    runs = [(_variant(rng, wl), _accelerator(rng), SparsityConfig(skip=rng.choice(["none", "both"])))
            for wl in wls.values()]
    clear_caches()
    fast = [cost_workload(wl, acc, sparsity=sp) for wl, acc, sp in runs]
    clear_caches()
    monkeypatch.setattr(tiling_mod, "EXACT_RATIO_LIMIT", 0.0)      # every layer searched exhaustively
    for (wl, acc, sp), want in zip(runs, fast, strict=True):
        got = cost_workload(wl, acc, sparsity=sp)
        assert got.energy_by_dataflow.tolist() == want.energy_by_dataflow.tolist()
        assert got.cycles_by_dataflow.tolist() == want.cycles_by_dataflow.tolist()
    clear_caches()


def test_search_mode_costs_equal_the_scalar_reference_on_random_configurations(
        user_model: Callable[..., torch.nn.Module]) -> None:
    rng = random.Random(2)
    wls = _workloads(user_model)
    configs = 0
    for name in sorted(wls) * 3:
        wl = _variant(rng, wls[name])
        acc = _accelerator(rng)
        sp = SparsityConfig(skip=rng.choice(["none", "weights", "activations", "both"]))  # type: ignore[arg-type]
        objective = rng.choice(["energy", "latency"])
        power = {s.name: rng.choice([0.5, 0.8, 1.3]) for s in wl if rng.random() < 0.3}
        try:
            nc = evaluate_network(wl, acc, objective=objective, sparsity=sp, relative_power=power)  # type: ignore[arg-type]
        except MappingError as err:                   # a layer fits no tiling / RS mapping: refused the same way
            assert "fits no" in str(err)
            continue
        fast = cost_workload(wl, acc, objective=objective, sparsity=sp, relative_power=power)  # type: ignore[arg-type]
        for i, df in enumerate(nc.dataflows):
            for j, (layer, got) in enumerate(zip(wl, nc.costs(df), strict=True)):
                energy, cycles, mapping, tiling = _scalar_best(layer, acc, df, sp, power.get(layer.name, 1.0),
                                                               objective)
                where = (name, layer.name, df, acc.name, sp.skip, objective)
                assert got.total_energy == pytest.approx(energy, rel=1e-12), where
                assert got.cycles == cycles, where
                assert {k: got.tiling[k] for k in mapping} == mapping, where         # the same RS mapping
                assert (got.tiling["order"], got.tiling["m_tile"], got.tiling["p_tile"],
                        got.tiling["c_tile"]) == tiling[:4], where
                assert fast.energy_by_dataflow[j, i] == got.total_energy, where    # bit for bit
                assert fast.cycles_by_dataflow[j, i] == got.cycles, where
        assert fast.best_dataflow == tuple(c.dataflow for c in nc.best_per_layer())
        configs += 1
    assert configs >= 12
