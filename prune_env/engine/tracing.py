"""Tracing a model: torch-pruning's dependency graph and the guards its group building needs.

``trace_dependency_graph`` traces the model once; ``_pruning_groups`` walks its coupled
channel groups, reporting a group torch-pruning fails to build instead of ending the walk.
torch-pruning 1.6's index mapping needs two guards: a reshape it cannot map (a channel
shuffle) is left unmapped, and a flatten or group build that runs away (a window partition)
stops at the model's ``_IndexBounds``. The hooked forward passes read what one sample does
in the model: the output positions of every layer and the largest tensor.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import group as _tp_group
from torch_pruning.dependency import index_mapping as _tp_index_mapping

_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm


class _KeptWhole(Exception):
    """A channel group this engine cannot prune safely; the message says why."""


def _module_spatial(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of every Conv/Linear, and the execution order of layers."""
    spatial: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (_CONV, nn.Linear)):
            channels = module.out_channels if isinstance(module, _CONV) else module.out_features

            def hook(mod, inputs, output, name=name, channels=channels):
                spatial[name] = int(output[:1].numel() // channels)

            hooks.append(module.register_forward_hook(hook))
    _forward_once(model, example_input[:1], hooks)
    return spatial  # dict insertion order = execution order


def _forward_once(model: nn.Module, sample: torch.Tensor, hooks: list) -> None:
    """Run ``model`` on ``sample`` in eval mode without gradients, then remove ``hooks``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


@contextlib.contextmanager
def _tolerant_reshape_mapping() -> Iterator[None]:
    """Trace through reshapes torch-pruning 1.6 cannot map (a channel shuffle divides by 0).

    Such a reshape is left without an index mapping; the groups that cross it are then
    caught by the numerical check and kept whole, instead of the whole trace failing.
    """
    original = _tp_index_mapping.update_reshape_index_mapping

    def tolerant(graph, node):
        with contextlib.suppress(ZeroDivisionError):
            original(graph, node)

    _tp_index_mapping.update_reshape_index_mapping = tolerant
    try:
        yield
    finally:
        _tp_index_mapping.update_reshape_index_mapping = original


class _IndexMappingDiverged(Exception):
    """torch-pruning's group build left the model's channels or circled (``_IndexBounds``)."""


@dataclass(frozen=True)
class _IndexBounds:
    """What building one pruning group of a model may do (see ``_bounded_index_mapping``)."""

    # Largest dimension of any parameter. A flatten's input is channels C of a tensor whose
    # C * positions features feed a Linear: C is at most that Linear's width, so a larger
    # index entering a flatten has been expanded already.
    channels: int
    elements: int  # elements per sample of the largest tensor any module takes or returns
    # Times one node may join one group. A sound group needed at most 16 over torchvision's
    # classifiers (ShuffleNetV2's shuffle; others 2-6); MaxViT's blocks had passed 200 at 7 s.
    visits: int = 64


def _index_bounds(model: nn.Module, example_input: torch.Tensor) -> _IndexBounds:
    """The bounds of ``model``'s group builds, from its parameters and one traced sample."""
    channels = max((max(p.shape) for p in model.parameters() if p.dim()), default=1)
    sample = example_input[:1]
    elements = sample.numel()

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal elements
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in (*inputs, *outputs):
            if isinstance(t, torch.Tensor):  # one sample: whatever its batch dimension
                elements = max(elements, t.numel())

    _forward_once(model, sample, [m.register_forward_hook(hook) for m in model.modules()])
    return _IndexBounds(channels, elements)


@contextlib.contextmanager
def _bounded_index_mapping(bounds: _IndexBounds) -> Iterator[None]:
    """Stop torch-pruning's group building once its index mapping runs away.

    torch-pruning 1.6 reads a window partition (Swin's and MaxViT's view/permute) as a
    flatten. Around a Swin block it expands the indices by the stride again and again: 768
    channels became 2 million indices and the build grew past 16 GB (torchvision's swin_t).
    Around a MaxViT block it circles with ever new index sets (one node joined one group 200
    times in 7 s; the build passed 10 GB). So a flatten's input must be channels (below
    ``bounds.channels``) and its output must fit in a tensor (below ``bounds.elements``), and
    a node may join a group at most ``bounds.visits`` times. Otherwise
    ``_IndexMappingDiverged`` is raised before more is allocated, and the group is kept whole
    with that reason.
    """
    mapping = _tp_index_mapping._FlattenIndexMapping
    original_call, original_add = mapping.__call__, _tp_group.Group.add_dep

    def bounded_call(self, idxs: list) -> list:
        if not self.reverse and idxs:
            top = max(i.idx for i in idxs) + 1
            if top > bounds.channels:
                raise _IndexMappingDiverged(
                    f"a flatten expands index {top - 1} again, past the widest layer of the "
                    f"model ({bounds.channels} channels)"
                )
            if top * self._stride > bounds.elements:
                raise _IndexMappingDiverged(
                    f"a flatten maps its channels to index {top * self._stride - 1}, past the "
                    f"largest tensor of the model ({bounds.elements} elements per sample)"
                )
        return original_call(self, idxs)

    def bounded_add(self, dep, idxs: list) -> None:
        visits = self.__dict__.setdefault("_prune_env_visits", {})
        visits[dep.target] = visits.get(dep.target, 0) + 1
        if visits[dep.target] > bounds.visits:
            node = dep.target._name or str(dep.target.module)  # op nodes: "_SplitOp_36(...)"
            raise _IndexMappingDiverged(f"its group reaches {node} more than {bounds.visits} times")
        return original_add(self, dep, idxs)

    mapping.__call__, _tp_group.Group.add_dep = bounded_call, bounded_add
    try:
        yield
    finally:
        mapping.__call__, _tp_group.Group.add_dep = original_call, original_add


@contextlib.contextmanager
def _diverged_as_runtime_error(what: str) -> Iterator[None]:
    """A bound hit where no group can be kept whole is the caller's error, said in words."""
    try:
        yield
    except _IndexMappingDiverged as e:
        raise RuntimeError(f"{what} could not build a pruning group: {e}") from e


def trace_dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``; a trace failure names the argument."""
    with warnings.catch_warnings(), _tolerant_reshape_mapping():
        warnings.simplefilter("ignore")  # "unwrapped parameters detected": handled below
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False
            )
        except Exception as e:  # any trace failure is a property of the model
            raise ValueError(
                f"torch-pruning could not trace model with example_input of shape "
                f"{tuple(example_input.shape)}: {type(e).__name__}: {e}"
            ) from e


def _pruning_groups(
    graph: tp.DependencyGraph, ignored: set[nn.Module], bounds: _IndexBounds
) -> Iterator[tuple]:
    """(root module, its pruning group or the exception that building it raised).

    ``DependencyGraph.get_all_groups`` with one difference: a group torch-pruning fails to
    build (a split or reshape it maps wrongly, or indices it expands past ``bounds``)
    is reported instead of ending the iteration.
    """
    visited: set[nn.Module] = set()
    ignored = ignored | set(graph.IGNORED_LAYERS_IN_TRACING)
    for module in list(graph.module2node):
        if module in ignored or module in visited:
            continue
        if not isinstance(module, (_CONV, nn.Linear)):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            # Building a group re-runs the index mapping.
            with _tolerant_reshape_mapping(), _bounded_index_mapping(bounds):
                group = graph.get_pruning_group(
                    module,
                    pruner.prune_out_channels,
                    list(range(pruner.get_out_channels(module))),
                )
        except Exception as e:  # reported by the caller as the reason to keep it whole
            yield module, e
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                prunable &= dep.target.module not in ignored
        if prunable:
            yield module, group
