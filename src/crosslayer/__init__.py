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
    # the co-design search
    "search": "crosslayer.explore.search",
    "SearchConfig": "crosslayer.explore.search",
    "SearchResult": "crosslayer.explore.search",
}

__all__ = ["ChannelPruneConfig", "CheckpointError", "ConfigError", "CrossLayerError", "DataError", "DataSplits",
           "EvalResult", "FixedPointSpec", "FlowConfig", "MagnitudePruneConfig", "ModelError", "PruneResult",
           "QuantizeConfig", "QuantizeResult", "Report", "RunDir", "RunDirError", "ScheduleConfig", "StageError",
           "TrainConfig", "TrainResult", "__version__", "build_model", "evaluate", "fit", "load_dataset",
           "load_flow_config", "load_run_model", "load_splits", "load_weights", "quantize", "run_flow",
           "run_standalone", "sparsify"]
__all__ += ["SearchConfig", "SearchResult", "search"]


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
    from crosslayer.checkpoint import CheckpointError
    from crosslayer.data import DataSplits, load_dataset, load_splits
    from crosslayer.explore.search import SearchConfig, SearchResult, search
    from crosslayer.flow import load_flow_config, run_flow, run_standalone
    from crosslayer.models import build_model, load_weights
    from crosslayer.prune.api import ChannelPruneConfig, MagnitudePruneConfig, sparsify
    from crosslayer.prune.schedule import PruneResult, ScheduleConfig
    from crosslayer.quant.fixed_point import FixedPointSpec
    from crosslayer.quant.pipeline import QuantizeConfig, QuantizeResult, quantize
    from crosslayer.report import Report
    from crosslayer.rundir import RunDir, RunDirError, load_run_model
    from crosslayer.stage import FlowConfig
    from crosslayer.train import EvalResult, TrainConfig, TrainResult, evaluate, fit
