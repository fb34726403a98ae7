"""Design-space exploration: joint pruning + quantization, sweeps and Pareto fronts, and the hardware-aware
co-design search (docs/search.md). The verbs: :func:`pareto_sweep` (:mod:`crosslayer.explore.api`) and
:func:`search` (:mod:`crosslayer.explore.search`)."""

from crosslayer.explore.api import ExploreConfig, ParetoResult, pareto_sweep
from crosslayer.explore.hypervolume import hypervolume_2d
from crosslayer.explore.joint import JointResult, one_loop, sequential
from crosslayer.explore.pareto import dominates, pareto_front
from crosslayer.explore.search import FinalPoint, SearchConfig, SearchResult, TrialRecord, search
from crosslayer.explore.search_space import Design, LayerChoice, SearchSpace
from crosslayer.explore.sweep import DesignPoint, sweep

__all__ = ["Design", "DesignPoint", "ExploreConfig", "FinalPoint", "JointResult", "LayerChoice", "ParetoResult",
           "SearchConfig", "SearchResult", "SearchSpace", "TrialRecord", "dominates", "hypervolume_2d", "one_loop",
           "pareto_front", "pareto_sweep", "search", "sequential", "sweep"]
