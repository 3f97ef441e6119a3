"""Torch-Pruning's own pruners on the engine's base network, to cross-check the engine.

``tp_prune_reference`` prunes with torch-pruning the channels a ``ChannelEngine`` prunes
(the network it builds must equal this one); ``tp_global_pruning`` asks torch-pruning's
global ``MetaPruner`` which channels it would remove (the ``tp_global`` baseline).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from prune_env.engine.tracing import (
    _CONV,
    _bounded_index_mapping,
    _diverged_as_runtime_error,
    _tolerant_reshape_mapping,
)

if TYPE_CHECKING:
    from prune_env.engine.channel import ChannelEngine


def tp_prune_reference(
    model: nn.Module, example_input: torch.Tensor, engine: ChannelEngine, counts: Sequence[int]
) -> nn.Module:
    """Prune a deep copy of ``model`` with torch-pruning itself (for cross-checks in tests)."""
    net = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example_input[:1])
    for unit, ranking, count in zip(engine.units, engine.rankings, counts, strict=True):
        repeats = engine.shapes[unit.name].out_size // unit.size  # convolution groups
        pruned = sorted(int(d) + i * unit.size for d in ranking[count:] for i in range(repeats))
        if not pruned:
            continue
        root = net.get_submodule(unit.name)
        fn = tp.prune_conv_out_channels if isinstance(root, _CONV) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, fn, idxs=pruned).prune()
    return net.eval()


def tp_global_pruning(engine: ChannelEngine, pruning_ratio: float) -> dict[str, np.ndarray]:
    """The channels Torch-Pruning's own global pruner removes at ``pruning_ratio``.

    Runs ``tp.pruner.MetaPruner(global_pruning=True, pruning_ratio=pruning_ratio)`` with the
    torch-pruning importance of the engine's: ``GroupMagnitudeImportance(p=1)`` for "l1",
    ``(p=2)`` (torch-pruning's default) for "l2", ``BNScaleImportance()`` (Network
    Slimming) for "bn_scale", each with its defaults (mean over the group, groups normalised
    by their mean), on a copy of the engine's base network. Every Conv/Linear whose output
    channels no unit prunes is ignored (the head, the ``ignored_layers``, the groups kept
    whole). The groups are read, not pruned. Returns unit name -> the unit's pruned positions
    (sorted; units it leaves alone are absent). One step, as MetaPruner does by default:
    its ``max_pruning_ratio`` is checked between steps, so one step has no floor per group.
    """
    importances = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }
    if engine.importance not in importances:
        raise ValueError(
            f"torch-pruning has no global pruning for importance {engine.importance!r}; "
            f"expected one of {sorted(importances)}"
        )
    if not 0 <= pruning_ratio < 1:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {pruning_ratio}")
    net = copy.deepcopy(engine.base).eval()
    modules = dict(net.named_modules())
    ignored = [
        modules[name]
        for name, shape in engine.shapes.items()
        if shape.kind in ("conv", "linear") and not shape.out_slices
    ]
    names = {m: n for n, m in modules.items()}
    sizes = {u.name: u.size for u in engine.units}
    pruned: dict[str, np.ndarray] = {}
    # The engine's guards on torch-pruning's index mapping (a channel shuffle, a window
    # partition read as a flatten): the groups they catch are ignored here already.
    with (
        _tolerant_reshape_mapping(),
        _bounded_index_mapping(engine.index_bounds),  # net is a copy of the engine's base
        _diverged_as_runtime_error("torch-pruning's MetaPruner"),
    ):
        pruner = tp.pruner.MetaPruner(
            net,
            engine.example_input,
            importance=importances[engine.importance](),
            global_pruning=True,
            pruning_ratio=pruning_ratio,
            ignored_layers=ignored,
        )
        for group in pruner.step(interactive=True):
            root = names[group[0].dep.target.module]
            if root not in sizes:
                raise RuntimeError(
                    f"torch-pruning pruned the group of {root!r}, which no unit owns"
                )
            idxs = np.asarray([int(i) for i in group[0].idxs], dtype=np.int64)
            if len(idxs):  # MetaPruner also yields the groups it takes nothing from
                pruned[root] = np.unique(idxs % sizes[root])  # repeated per convolution group
    return pruned
