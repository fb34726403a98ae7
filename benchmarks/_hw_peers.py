"""Peer hardware models for benchmarks/hardware.py, each run in its own virtual environment under
benchmarks/.work/: SCALE-Sim 3.0.0 (a cycle-level simulator of a systolic array and its double-buffered
SRAMs; it writes report CSVs, which we parse) and ZigZag 3.9.1 (an analytical cost model with its own
temporal-mapping search, LOMA). Our accelerator description is translated into each tool's input format.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from _common import WORK, peer_venv
from crosslayer.hw import Accelerator, LayerShape, mac_energy

SCALESIM_REQS = ["scalesim==3.0.0", "numpy<2.4"]
ZIGZAG_REQS = ["zigzag-dse==3.9.1", "six"]   # zigzag-dse imports six without declaring it

SCALESIM_DRIVER = r'''
import json, sys, time, os, io, contextlib, shutil
from scalesim.scale_sim import scalesim
spec = json.load(open(sys.argv[1]))
work = spec["work"]
out = []
for df in spec["dataflows"]:
    cfg = os.path.join(work, f"scale_{df}.cfg")
    with open(cfg, "w") as f:
        f.write(spec["cfg"].replace("@DF@", df))
    for L in spec["layers"]:
        topo = os.path.join(work, f"topo_{L['name']}.csv")
        lay = os.path.join(work, f"layout_{L['name']}.csv")
        with open(topo, "w") as f:
            f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
                    "Strides,\n")
            f.write(f"{L['name']}, {L['h']}, {L['w']}, {L['r']}, {L['s']}, {L['c']}, {L['m']}, {L['stride']},\n")
        with open(lay, "w") as f:
            f.write("Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, Filter Height Intraline "
                    "Factor, Filter Width Intraline Factor, Channel Intraline Factor, Num Filter Intraline Factor, "
                    "IFMAP Height Intraline Order, IFMAP Width Intraline Order,\n")
            f.write(f"{L['name']}, 1, 1, 1, 1, 1, 1, 1, 1,\n")
        logdir = os.path.join(work, "logs", df, L["name"])
        shutil.rmtree(logdir, ignore_errors=True)
        os.makedirs(os.path.dirname(logdir), exist_ok=True)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=lay,
                         input_type_gemm=False)
            s.run_scale(top_path=logdir)
        dt = time.perf_counter() - t0
        base = os.path.join(logdir, spec["run_name"])
        row = [x.strip() for x in open(os.path.join(base, "COMPUTE_REPORT.csv")).read().splitlines()[1].split(",")]
        det = [x.strip() for x in open(os.path.join(base, "DETAILED_ACCESS_REPORT.csv")).read().splitlines()[1]
               .split(",")]
        out.append({"layer": L["name"], "dataflow": df.upper(), "cycles_incl_prefetch": int(float(row[1])),
                    "total_cycles": int(float(row[2])), "stall_cycles": int(float(row[3])),
                    "dram_ifmap_reads": int(float(det[12])), "dram_filter_reads": int(float(det[15])),
                    "dram_ofmap_writes": int(float(det[18])), "seconds": dt})
json.dump(out, open(sys.argv[2], "w"))
'''

SCALESIM_CFG = """[general]
run_name = bench

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:   {ifmap_kb}
FilterSramSzkB:  {filter_kb}
OfmapSramSzkB:   {ofmap_kb}
IfmapOffset:    0
FilterOffset:   100000000
OfmapOffset:    200000000
Bandwidth : {ofmap_bw}
Dataflow : @DF@
MemoryBanks:   1
ReadRequestBuffer: 1024
WriteRequestBuffer: 1024

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {ifmap_bw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {filter_bw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: False
"""


def scalesim_entry(layer: LayerShape) -> dict[str, Any]:
    """SCALE-Sim takes an unpadded input and computes outputs as ceil((H - R + stride) / stride); we hand it
    the input extent the layer really reads, (out - 1) * stride + R, so both sides see the same GEMM."""
    h = (layer.out_h - 1) * layer.stride + layer.kernel_h
    w = (layer.out_w - 1) * layer.stride + layer.kernel_w
    return {"name": layer.name.replace(".", "_"), "h": h, "w": w, "r": layer.kernel_h, "s": layer.kernel_w,
            "c": layer.in_channels, "m": layer.out_channels, "stride": layer.stride}


def run_scalesim(layers: list[LayerShape], *, rows: int, cols: int, memory: dict[str, int], tag: str,
                 dataflows: tuple[str, ...] = ("os", "ws", "is")) -> list[dict[str, Any]]:
    """Run SCALE-Sim on ``layers`` with SRAM sizes (kB) and DRAM bandwidths (words / cycle) ``memory``."""
    py = peer_venv("scalesim", SCALESIM_REQS)
    work = WORK / f"scalesim-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "driver.py").write_text(SCALESIM_DRIVER)
    spec = {"work": str(work), "run_name": "bench", "cfg": SCALESIM_CFG.format(rows=rows, cols=cols, **memory),
            "dataflows": list(dataflows), "layers": [scalesim_entry(s) for s in layers]}
    (work / "spec.json").write_text(json.dumps(spec))
    subprocess.run([str(py), str(work / "driver.py"), str(work / "spec.json"), str(work / "out.json")],
                   check=True, cwd=work)
    return json.loads((work / "out.json").read_text())


# --- ZigZag -------------------------------------------------------------------------------------------
ZIGZAG_DRIVER = r'''
import json, sys, time, os, logging, io, contextlib
logging.disable(logging.CRITICAL)
import zigzag
from zigzag.api import get_hardware_performance_zigzag
spec = json.load(open(sys.argv[1]))
out = []
for L in spec["layers"]:
    wl = os.path.join(spec["work"], f"wl_{L['name']}.yaml")
    open(wl, "w").write(L["yaml"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        energy, latency, cmes = get_hardware_performance_zigzag(
            workload=wl, accelerator=spec["accelerator"], mapping=spec["mapping"], opt="energy",
            dump_folder=os.path.join(spec["work"], "out", L["name"]), loma_show_progress_bar=False)
    dt = time.perf_counter() - t0
    cme = cmes[0][1][0][0]
    levels = {str(op): [float(x) for x in v] for op, v in cme.mem_energy_breakdown.items()}
    out.append({"layer": L["name"], "energy": float(energy), "latency_cycles": float(latency),
                "ideal_cycles": float(cme.ideal_cycle), "mac_energy": float(cme.mac_energy),
                "memory_energy": levels, "seconds": dt})
json.dump({"version": getattr(zigzag, "__version__", ""), "layers": out}, open(sys.argv[2], "w"))
'''


def _port(name: str, kind: str, bw_min: int, bw_max: int, alloc: list[str]) -> str:
    items = ", ".join(f'"{a}"' for a in alloc)
    return (f"      - name: {name}\n        type: {kind}\n        bandwidth_min: {bw_min}\n"
            f"        bandwidth_max: {bw_max}\n        allocation: [{items}]\n")


def _memory(name: str, size_bits: int, cost: float, operands: list[str], ports: list[str], served: str) -> str:
    return (f"  {name}:\n    size: {size_bits}\n    r_cost: {cost}\n    w_cost: {cost}\n    area: 0\n"
            f"    latency: 1\n    operands: [{', '.join(operands)}]\n    ports:\n{''.join(ports)}"
            f"    served_dimensions: {served}\n")


def zigzag_accelerator(acc: Accelerator, bits: int) -> str:
    """Our accelerator as a ZigZag hardware description: per-PE weight, input and psum registers (our RF),
    the global buffer (our GLB, all operands) and DRAM, each access costing our per-word energy scaled to the
    port width (ZigZag charges ``r_cost`` per access of ``bandwidth_max`` bits); MAC energy at ``bits``; a
    systolic array declares both array dimensions systolic, as ZigZag's own TPU-like example does."""
    e, w = acc.energy, acc.word_bits
    psum = max(acc.psum_bits, bits)
    rf_w = _memory("rf_w", bits, e.rf * bits / w, ["I2"], [
        _port("r_port_1", "read", bits, bits, ["I2, tl"]), _port("w_port_1", "write", bits, bits, ["I2, fh"])], "[]")
    rf_i = _memory("rf_i", bits, e.rf * bits / w, ["I1"], [
        _port("r_port_1", "read", bits, bits, ["I1, tl"]), _port("w_port_1", "write", bits, bits, ["I1, fh"])], "[]")
    rf_o = _memory("rf_o", psum, e.rf * psum / w, ["O"], [
        _port("r_port_1", "read", psum, psum, ["O, tl"]), _port("r_port_2", "read", psum, psum, ["O, th"]),
        _port("w_port_1", "write", psum, psum, ["O, fh"]), _port("w_port_2", "write", psum, psum, ["O, fl"])], "[]")
    gbw = int(acc.glb_bandwidth * w)
    glb = _memory("glb", acc.glb_bytes * 8, e.glb * acc.glb_bandwidth, ["I1", "I2", "O"], [
        _port("r_port_1", "read", w, gbw, ["I1, tl", "I2, tl", "O, tl", "O, th"]),
        _port("w_port_1", "write", w, gbw, ["I1, fh", "I2, fh", "O, fh", "O, fl"])], "[D1, D2]")
    dbw = int(acc.dram_bandwidth * w)
    dram = _memory("dram", acc.dram_bytes * 8, e.dram * acc.dram_bandwidth, ["I1", "I2", "O"], [
        _port("rw_port_1", "read_write", w, dbw,
              ["I1, fh", "I1, tl", "I2, fh", "I2, tl", "O, fh", "O, tl", "O, fl", "O, th"])], "[D1, D2]")
    systolic = "  systolic_dimensions: [D1, D2]\n" if acc.kind == "systolic" else ""
    return (f"name: crosslayer_{acc.name}\nmemories:\n{rf_w}{rf_i}{rf_o}{glb}{dram}operational_array:\n"
            f"  unit_energy: {mac_energy(acc, bits, bits)}\n  unit_area: 1\n  dimensions: [D1, D2]\n"
            f"  sizes: [{acc.cols}, {acc.rows}]\n{systolic}")


def zigzag_mapping(acc: Accelerator) -> str:
    """Weight stationary as on the TPU (ZigZag's own tpu_like mapping): output channels K across the array's
    columns (D1), input channels C across its rows (D2)."""
    return (f"- name: default\n  spatial_mapping:\n    D1:\n      - K, {acc.cols}\n    D2:\n      - C, {acc.rows}\n"
            "  memory_operand_links:\n    O: O\n    W: I2\n    I: I1\n")


def zigzag_layer(layer: LayerShape, psum_bits: int) -> dict[str, str]:
    """One layer as a ZigZag workload (a linear layer is a 1x1 convolution on a 1x1 map)."""
    p, st = layer.padding, layer.stride
    w_in, h_in = layer.in_w + 2 * p, layer.in_h + 2 * p
    yaml = (f"- id: 0\n  operator_type: Conv\n  equation: O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]\n"
            f"  dimension_relations: [ix={st}*ox+1*fx, iy={st}*oy+1*fy]\n  loop_dims: [B, K, C, OY, OX, FY, FX]\n"
            f"  loop_sizes: [{layer.batch}, {layer.out_channels}, {layer.in_channels}, {layer.out_h}, "
            f"{layer.out_w}, {layer.kernel_h}, {layer.kernel_w}]\n"
            f"  pr_loop_dims: [IX, IY]\n  pr_loop_sizes: [{w_in}, {h_in}]\n  padding: [[{p}, {p}], [{p}, {p}]]\n"
            f"  operand_precision:\n    W: {layer.weight_bits}\n    I: {layer.act_bits}\n    O: {psum_bits}\n"
            f"    O_final: {layer.act_bits}\n  operand_source:\n    I: 0\n    W: 0\n")
    return {"name": layer.name.replace(".", "_"), "yaml": yaml}


def run_zigzag(layers: list[LayerShape], acc: Accelerator, bits: int) -> dict[str, Any]:
    """ZigZag (its API defaults: LOMA temporal mapping search, lpf_limit 6) on each layer, energy objective."""
    py = peer_venv("zigzag", ZIGZAG_REQS)
    work = WORK / "zigzag-bench"
    work.mkdir(parents=True, exist_ok=True)
    (work / "driver.py").write_text(ZIGZAG_DRIVER)
    (work / "accelerator.yaml").write_text(zigzag_accelerator(acc, bits))
    (work / "mapping.yaml").write_text(zigzag_mapping(acc))
    psum = max(acc.psum_bits, bits)
    spec = {"work": str(work), "accelerator": str(work / "accelerator.yaml"), "mapping": str(work / "mapping.yaml"),
            "layers": [zigzag_layer(s, psum) for s in layers]}
    (work / "spec.json").write_text(json.dumps(spec))
    subprocess.run([str(py), str(work / "driver.py"), str(work / "spec.json"), str(work / "out.json")],
                   check=True, cwd=work)
    out = json.loads((work / "out.json").read_text())
    if not out.get("version"):
        out["version"] = subprocess.run([str(py), "-c", "import importlib.metadata as m; "
                                         "print(m.version('zigzag-dse'))"], capture_output=True, text=True,
                                        check=True).stdout.strip()
    return out
