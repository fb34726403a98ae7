"""The hardware model: workload extraction, accelerator description, dataflows, sparsity, energy and latency.

The cost model (everything importable from here; not :mod:`crosslayer.hw.workload`, ``analysis``, ``stage``)
needs no torch: it works on a tuple of
:class:`LayerShape` and an :class:`Accelerator`.
"""

from crosslayer.hw.accelerator import DATAFLOWS, Accelerator, EnergyTable, load_accelerator, mac_energy, preset_names
from crosslayer.hw.errors import HardwareConfigError, MappingError
from crosslayer.hw.mapping import LayerCost, evaluate_layer
from crosslayer.hw.network import NetworkCost, WorkloadCost, cost_workload, evaluate_network
from crosslayer.hw.shapes import LayerShape, conv, linear
from crosslayer.hw.sparsity import SparsityConfig, compressed_bits
from crosslayer.hw.systolic import gemm_timing
from crosslayer.hw.voltage import SramVoltageModel, at_memory_voltage, memory_energy_ratio

__all__ = ["DATAFLOWS", "Accelerator", "EnergyTable", "HardwareConfigError", "LayerCost", "LayerShape",
           "MappingError", "NetworkCost", "SparsityConfig", "WorkloadCost", "compressed_bits", "conv", "cost_workload",
           "evaluate_layer",
           "evaluate_network", "gemm_timing", "linear", "load_accelerator", "mac_energy", "preset_names"]
__all__ += ["SramVoltageModel", "at_memory_voltage", "memory_energy_ratio"]
