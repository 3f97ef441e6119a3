"""Pruning engine: the one package that talks to torch-pruning.

The dependency graph is traced once per base model. From it we keep only plain data (which
positions of which tensor dimension belong to which coupled channel group, and which
decision each position stands for), so that an episode builds its pruned network by slicing
the base tensors along a precomputed ranking: no re-tracing, no deepcopy of real weights, and
the engine stays picklable (the graph itself holds hooks and closures).

Two granularities share one interface:

- ``ChannelEngine``: structured pruning of coupled channel groups; the result is a physically
  smaller network. Pruned structures: Conv (plain, depthwise, grouped), Linear, BatchNorm
  (affine or not), ``nn.Parameter`` tensors used directly on a channel dimension, residual
  adds, element-wise gates (squeeze-excite), concatenations and splits. A group that touches
  anything else (other norms, transposed convolutions, attention, channel orders
  torch-pruning cannot map such as a channel shuffle) is kept whole, and the engine says
  which and why, once.
- ``WeightEngine``: per-layer unstructured magnitude pruning of every Conv/Linear weight;
  the result has the base shapes with zeros (the paper's coarse-grained setting).

Every channel group the engine accepts is checked numerically at construction: the pruned
network must equal the masked one (pruned channels zeroed) and its counted parameters and
MACs must equal the analytic ones; a group that fails is kept whole.

Its modules, one concept each (as Torch-Pruning separates graph, importance and pruner):
``tracing`` (the dependency graph and the guards on torch-pruning's index mapping),
``groups`` (which channel groups become units), ``importance`` (ranking channels and
weights), ``building`` (the pruned network and its numerical check), ``counting``
(parameters and MACs), the engines ``channel``, ``weight`` and ``factory``, and
``reference`` (Torch-Pruning's own pruners, for cross-checks).
"""

from prune_env.engine.channel import ChannelEngine
from prune_env.engine.counting import DimSlice, LayerShape, Unit, measure_resources
from prune_env.engine.factory import make_engine
from prune_env.engine.importance import IMPORTANCES
from prune_env.engine.reference import tp_global_pruning, tp_prune_reference
from prune_env.engine.tracing import trace_dependency_graph
from prune_env.engine.weight import WeightEngine

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
