"""Pruning: unstructured magnitude schemes, structured channel pruning, the iterative schedule, and
honest sparse-storage accounting. See docs/prune.md."""

from crosslayer.prune.api import ChannelPruneConfig, MagnitudePruneConfig, sparsify
from crosslayer.prune.masks import (
                                    SCHEMES,
                                    Masks,
                                    Scheme,
                                    apply_masks,
                                    blind_masks,
                                    distribution_masks,
                                    lambda_for_sparsity,
                                    layer_sparsity,
                                    magnitude_masks,
                                    mask_sparsity,
                                    prunable_weights,
                                    uniform_masks,
)
from crosslayer.prune.schedule import IterativePruner, PruneResult, ScheduleConfig, rebuild_structure
from crosslayer.prune.storage import (
                                    CONV_INDEX_BITS,
                                    FC_INDEX_BITS,
                                    LayerStorage,
                                    ModelStorage,
                                    csr_relative_index_bits,
                                    csr_relative_index_entries,
                                    model_storage,
)
from crosslayer.prune.structured import (
                                    Importance,
                                    StructuredResult,
                                    channel_importance,
                                    count_macs,
                                    kept_channels,
                                    prunable_groups,
                                    prune_groups,
                                    prune_structured,
)
from crosslayer.prune.tracer import ChannelGroup, trace_channel_groups

__all__ = [
                                    "CONV_INDEX_BITS",
                                    "FC_INDEX_BITS",
                                    "SCHEMES",
                                    "ChannelGroup",
                                    "ChannelPruneConfig",
                                    "Importance",
                                    "IterativePruner",
                                    "LayerStorage",
                                    "MagnitudePruneConfig",
                                    "Masks",
                                    "ModelStorage",
                                    "PruneResult",
                                    "ScheduleConfig",
                                    "Scheme",
                                    "StructuredResult",
                                    "apply_masks",
                                    "blind_masks",
                                    "channel_importance",
                                    "count_macs",
                                    "csr_relative_index_bits",
                                    "csr_relative_index_entries",
                                    "distribution_masks",
                                    "kept_channels",
                                    "lambda_for_sparsity",
                                    "layer_sparsity",
                                    "magnitude_masks",
                                    "mask_sparsity",
                                    "model_storage",
                                    "prunable_groups",
                                    "prunable_weights",
                                    "prune_groups",
                                    "prune_structured",
                                    "rebuild_structure",
                                    "sparsify",
                                    "trace_channel_groups",
                                    "uniform_masks",
]
