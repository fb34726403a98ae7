"""Design-space exploration: joint pruning + quantization, sweeps and Pareto fronts. The verb:
:func:`pareto_sweep` (:mod:`crosslayer.explore.api`)."""

from crosslayer.explore.api import ExploreConfig, ParetoResult, pareto_sweep
from crosslayer.explore.joint import JointResult, one_loop, sequential
from crosslayer.explore.pareto import dominates, pareto_front
from crosslayer.explore.sweep import DesignPoint, sweep

__all__ = ["DesignPoint", "ExploreConfig", "JointResult", "ParetoResult", "dominates", "one_loop", "pareto_front",
           "pareto_sweep", "sequential", "sweep"]
