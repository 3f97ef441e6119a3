"""Pruning engine (moved into a package; split by concept in the next commit)."""

from prune_env.engine.channel import (
    IMPORTANCES,
    ChannelEngine,
    DimSlice,
    LayerShape,
    Unit,
    WeightEngine,
    make_engine,
    measure_resources,
    tp_global_pruning,
    tp_prune_reference,
    trace_dependency_graph,
)
from prune_env.engine.channel import (
    _bounded_index_mapping as _bounded_index_mapping,
)
from prune_env.engine.channel import (
    _Candidate as _Candidate,
)
from prune_env.engine.channel import (
    _IndexBounds as _IndexBounds,
)
from prune_env.engine.channel import (
    _IndexMappingDiverged as _IndexMappingDiverged,
)

__all__ = [
    "IMPORTANCES",
    "ChannelEngine",
    "DimSlice",
    "LayerShape",
    "Unit",
    "WeightEngine",
    "make_engine",
    "measure_resources",
    "tp_global_pruning",
    "tp_prune_reference",
    "trace_dependency_graph",
]
