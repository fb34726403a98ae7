"""Design-space exploration: joint pruning + quantization, sweeps and Pareto fronts."""

from crosslayer.explore.joint import JointResult, one_loop, sequential
from crosslayer.explore.pareto import dominates, pareto_front
from crosslayer.explore.sweep import DesignPoint, sweep

__all__ = ["DesignPoint", "JointResult", "dominates", "one_loop", "pareto_front", "sequential", "sweep"]
