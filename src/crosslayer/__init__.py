"""crosslayer: cross-layer optimisation of deep neural networks for the edge.

The public API is one verb per step, each with one config and a typed result (see docs/api.md)::

    import crosslayer as xl

    data = xl.load_splits("mnist")
    model = xl.build_model("lenet5")
    xl.fit(model, data.train, data.val, xl.TrainConfig(epochs=2))
    pruned = xl.sparsify(model, xl.MagnitudePruneConfig(sparsity=0.9)).model
    q = xl.quantize(pruned, xl.QuantizeConfig(weight_bits=4), data).model
    print(xl.evaluate(q, data.test).accuracy)

Names are imported on first use, so ``import crosslayer`` stays light (and ``crosslayer.hw`` needs no
torch).
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from crosslayer.errors import ConfigError, CrossLayerError, DataError, ModelError, StageError

try:
    __version__ = _metadata.version("crosslayer")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # run directories, flows, reports
    "Report": "crosslayer.report",
    "load_flow_config": "crosslayer.flow",
    "run_flow": "crosslayer.flow",
    "run_standalone": "crosslayer.flow",
    "FlowConfig": "crosslayer.stage",
    "RunDir": "crosslayer.rundir",
    "load_run_model": "crosslayer.rundir",
    "CheckpointError": "crosslayer.checkpoint",
    "RunDirError": "crosslayer.rundir",
    # data and models
    "DataSplits": "crosslayer.data",
    "load_dataset": "crosslayer.data",
    "load_splits": "crosslayer.data",
    "build_model": "crosslayer.models",
    "load_weights": "crosslayer.models",
    # training and evaluation
    "TrainConfig": "crosslayer.train",
    "TrainResult": "crosslayer.train",
    "EvalResult": "crosslayer.train",
    "fit": "crosslayer.train",
    "evaluate": "crosslayer.train",
    # pruning
    "sparsify": "crosslayer.prune.api",
    "MagnitudePruneConfig": "crosslayer.prune.api",
    "ChannelPruneConfig": "crosslayer.prune.api",
    "ScheduleConfig": "crosslayer.prune.schedule",
    "PruneResult": "crosslayer.prune.schedule",
    # quantization
    "quantize": "crosslayer.quant.pipeline",
    "QuantizeConfig": "crosslayer.quant.pipeline",
    "QuantizeResult": "crosslayer.quant.pipeline",
    "FixedPointSpec": "crosslayer.quant.fixed_point",
    # storage accounting
    "ModelStorage": "crosslayer.prune.storage",
    "TensorStorage": "crosslayer.prune.storage",
    "model_storage": "crosslayer.prune.storage",
    # the packed file and ONNX
    "pack": "crosslayer.encode.api",
    "unpack": "crosslayer.encode.api",
    "export_onnx": "crosslayer.encode.api",
    "EncodeConfig": "crosslayer.encode.api",
    "ExportConfig": "crosslayer.encode.api",
    "PackResult": "crosslayer.encode.api",
    "ExportResult": "crosslayer.encode.api",
    # exploration
    "pareto_sweep": "crosslayer.explore.api",
    "ExploreConfig": "crosslayer.explore.api",
    "ParetoResult": "crosslayer.explore.api",
    # in-memory computing
    "imc_simulate": "crosslayer.imc.api",
    "imc_train": "crosslayer.imc.api",
    "SimulateConfig": "crosslayer.imc.api",
    "SimulateResult": "crosslayer.imc.api",
    "ImcTrainConfig": "crosslayer.imc.api",
    "ImcTrainResult": "crosslayer.imc.api",
    "CrossbarSpec": "crosslayer.imc.spec",
    "AwareTrainConfig": "crosslayer.imc.training",
    # security
    "attack": "crosslayer.security.api",
    "defend": "crosslayer.security.api",
    "backdoor": "crosslayer.security.api",
    "DefenceConfig": "crosslayer.security.api",
    "DefenceResult": "crosslayer.security.api",
    "BackdoorConfig": "crosslayer.security.api",
    "BackdoorResult": "crosslayer.security.experiments",
    "AttackResult": "crosslayer.security.base",
    "FGSMConfig": "crosslayer.security.fgsm",
    "PGDConfig": "crosslayer.security.pgd",
    "JSMAConfig": "crosslayer.security.jsma",
    "CWConfig": "crosslayer.security.cw",
    "HopSkipJumpConfig": "crosslayer.security.hopskipjump",
    "REDAttackConfig": "crosslayer.security.red_attack",
    "TrISecConfig": "crosslayer.security.trisec",
    "BadNetsConfig": "crosslayer.security.backdoor",
    "FinePruneConfig": "crosslayer.security.fine_pruning",
    # fault injection
    "inject_faults": "crosslayer.resilience.api",
    "FaultConfig": "crosslayer.resilience.api",
    "FaultResult": "crosslayer.resilience.api",
    # hardware cost
    "hardware_cost": "crosslayer.hw.api",
    "CostConfig": "crosslayer.hw.api",
    "HardwareCostResult": "crosslayer.hw.api",
    # approximate multipliers
    "approximate": "crosslayer.approx.api",
    "ApproximateConfig": "crosslayer.approx.api",
    "ApproximateResult": "crosslayer.approx.api",
    # detection on video
    "detect_video": "crosslayer.detect.api",
    "DetectConfig": "crosslayer.detect.api",
    "DetectVideoResult": "crosslayer.detect.api",
    # voltage-scaled weight memory
    "scale_memory_voltage": "crosslayer.memory.api",
    "MemoryConfig": "crosslayer.memory.api",
    "MemoryResult": "crosslayer.memory.api",
    "adapt_to_chip": "crosslayer.memory.api",
    "ChipAdaptation": "crosslayer.memory.api",
    # the co-design search
    "search": "crosslayer.explore.search",
    "SearchConfig": "crosslayer.explore.search",
    "SearchResult": "crosslayer.explore.search",
}

__all__ = ["AttackResult", "AwareTrainConfig", "BackdoorConfig", "BackdoorResult", "BadNetsConfig", "CWConfig",
           "ChannelPruneConfig", "CheckpointError", "ConfigError", "CrossLayerError", "CrossbarSpec", "DataError",
           "DataSplits", "DefenceConfig", "DefenceResult", "EncodeConfig", "EvalResult", "ExploreConfig",
           "ExportConfig", "ExportResult", "FGSMConfig", "FinePruneConfig", "FixedPointSpec", "FlowConfig",
           "HopSkipJumpConfig", "ImcTrainConfig", "ImcTrainResult", "JSMAConfig", "MagnitudePruneConfig", "ModelError",
           "ModelStorage", "PGDConfig", "PackResult", "ParetoResult", "PruneResult", "QuantizeConfig",
           "QuantizeResult", "REDAttackConfig", "Report", "RunDir", "RunDirError", "ScheduleConfig", "SimulateConfig",
           "SimulateResult", "StageError", "TensorStorage", "TrISecConfig", "TrainConfig", "TrainResult",
           "__version__", "attack", "backdoor", "build_model", "defend", "evaluate", "export_onnx", "fit",
           "imc_simulate", "imc_train", "load_dataset", "load_flow_config", "load_run_model", "load_splits",
           "load_weights", "model_storage", "pack", "pareto_sweep", "quantize", "run_flow", "run_standalone",
           "sparsify", "unpack"]
__all__ += ["SearchConfig", "SearchResult", "search"]
__all__ += ["FaultConfig", "FaultResult", "inject_faults"]
__all__ += ["CostConfig", "HardwareCostResult", "hardware_cost"]
__all__ += ["ApproximateConfig", "ApproximateResult", "approximate"]
__all__ += ["DetectConfig", "DetectVideoResult", "detect_video"]
__all__ += ["ChipAdaptation", "MemoryConfig", "MemoryResult", "adapt_to_chip", "scale_memory_voltage"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crosslayer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # static names for type checkers and IDEs
    from crosslayer.approx.api import ApproximateConfig, ApproximateResult, approximate
    from crosslayer.checkpoint import CheckpointError
    from crosslayer.data import DataSplits, load_dataset, load_splits
    from crosslayer.detect.api import DetectConfig, DetectVideoResult, detect_video
    from crosslayer.encode.api import (
        EncodeConfig,
        ExportConfig,
        ExportResult,
        PackResult,
        export_onnx,
        pack,
        unpack,
    )
    from crosslayer.explore.api import ExploreConfig, ParetoResult, pareto_sweep
    from crosslayer.explore.search import SearchConfig, SearchResult, search
    from crosslayer.flow import load_flow_config, run_flow, run_standalone
    from crosslayer.hw.api import CostConfig, HardwareCostResult, hardware_cost
    from crosslayer.imc.api import (
        ImcTrainConfig,
        ImcTrainResult,
        SimulateConfig,
        SimulateResult,
        imc_simulate,
        imc_train,
    )
    from crosslayer.imc.spec import CrossbarSpec
    from crosslayer.imc.training import AwareTrainConfig
    from crosslayer.memory.api import ChipAdaptation, MemoryConfig, MemoryResult, adapt_to_chip, scale_memory_voltage
    from crosslayer.models import build_model, load_weights
    from crosslayer.prune.api import ChannelPruneConfig, MagnitudePruneConfig, sparsify
    from crosslayer.prune.schedule import PruneResult, ScheduleConfig
    from crosslayer.prune.storage import ModelStorage, TensorStorage, model_storage
    from crosslayer.quant.fixed_point import FixedPointSpec
    from crosslayer.quant.pipeline import QuantizeConfig, QuantizeResult, quantize
    from crosslayer.report import Report
    from crosslayer.resilience.api import FaultConfig, FaultResult, inject_faults
    from crosslayer.rundir import RunDir, RunDirError, load_run_model
    from crosslayer.security.api import (
        BackdoorConfig,
        DefenceConfig,
        DefenceResult,
        attack,
        backdoor,
        defend,
    )
    from crosslayer.security.backdoor import BadNetsConfig
    from crosslayer.security.base import AttackResult
    from crosslayer.security.cw import CWConfig
    from crosslayer.security.experiments import BackdoorResult
    from crosslayer.security.fgsm import FGSMConfig
    from crosslayer.security.fine_pruning import FinePruneConfig
    from crosslayer.security.hopskipjump import HopSkipJumpConfig
    from crosslayer.security.jsma import JSMAConfig
    from crosslayer.security.pgd import PGDConfig
    from crosslayer.security.red_attack import REDAttackConfig
    from crosslayer.security.trisec import TrISecConfig
    from crosslayer.stage import FlowConfig
    from crosslayer.train import EvalResult, TrainConfig, TrainResult, evaluate, fit
