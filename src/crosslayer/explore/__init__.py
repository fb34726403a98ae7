"""Design-space exploration: joint pruning + quantization, sweeps and Pareto fronts, and the hardware-aware
co-design search (docs/search.md)."""

from crosslayer.explore.hypervolume import hypervolume_2d
from crosslayer.explore.joint import JointResult, one_loop, sequential
from crosslayer.explore.pareto import dominates, pareto_front
from crosslayer.explore.search import FinalPoint, SearchConfig, SearchResult, TrialRecord, search
from crosslayer.explore.search_space import Design, LayerChoice, SearchSpace
from crosslayer.explore.sweep import DesignPoint, sweep

__all__ = ["Design", "DesignPoint", "FinalPoint", "JointResult", "LayerChoice", "SearchConfig", "SearchResult",
           "SearchSpace", "TrialRecord", "dominates", "hypervolume_2d", "one_loop", "pareto_front", "search",
           "sequential", "sweep"]
