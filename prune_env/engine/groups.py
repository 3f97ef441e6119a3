"""Groups: which of torch-pruning's coupled channel groups become units, and how.

A group is read into plain data (``DimSlice``: which positions of which tensor dimension
it prunes, and which decision each position stands for), its size divided by the
convolution groups it feeds, and its channels scored. A group this engine cannot prune
safely raises ``_KeptWhole`` with the reason. Among the candidates, ``_claim`` drops the
groups that share a channel with an earlier one or would prune a grouped convolution
differently in its groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch_pruning as tp
from torch import nn

from prune_env.engine.counting import DimSlice, LayerShape
from prune_env.engine.importance import _score
from prune_env.engine.tracing import _BN, _CONV, _KeptWhole


@dataclass
class _Candidate:
    root: str
    size: int
    slices: list[DimSlice]
    scores: np.ndarray


@dataclass(frozen=True)
class _ModelNames:
    """Names of a model's modules and parameters, and the channel dimension of the unwrapped.

    Unwrapped parameters are ``nn.Parameter`` tensors a forward uses directly, outside any
    layer (torch-pruning prunes them along ``param_dims``).
    """

    modules: dict[nn.Module, str]
    params: dict[nn.Parameter, str]
    param_dims: dict[nn.Parameter, int]

    @classmethod
    def of(cls, model: nn.Module, graph: tp.DependencyGraph) -> _ModelNames:
        return cls(
            modules={m: n for n, m in dict(model.named_modules()).items()},
            params={p: n for n, p in model.named_parameters()},
            param_dims={p: dim for p, dim in graph.unwrapped_parameters},
        )


def _slice_key(
    item, graph: tp.DependencyGraph, shapes: dict[str, LayerShape], names: _ModelNames
) -> tuple[str, str] | None:
    """(tensor owner, "out" or "in") that one item of a group prunes; None: nothing to slice.

    An unwrapped parameter the group reaches joins ``shapes`` as a "param" shape.
    """
    target = item.dep.target.module
    if isinstance(target, nn.Parameter):
        name = names.params.get(target)
        if name is None or target not in names.param_dims:
            raise _KeptWhole("it reaches a parameter outside the model")
        dim = int(names.param_dims[target])
        if name not in shapes:
            channels = target.shape[dim]
            shapes[name] = LayerShape(
                "param",
                channels,
                target.numel() // channels,
                0,
                1,
                False,
                0,
                param_dim=dim,
            )
        return name, "out"
    if not isinstance(target, nn.Module):
        return None
    if not any(True for _ in target.parameters()) and not any(True for _ in target.buffers()):
        return None  # parameter-free op (ReLU, add, concat, flatten): nothing to slice
    name = names.modules.get(target)
    if name is None:
        raise _KeptWhole(f"it reaches a {type(target).__name__} outside the model")
    if isinstance(target, _CONV) and not target.transposed:
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        return name, ("out" if out or shapes[name].depthwise else "in")
    if isinstance(target, nn.Linear):
        return name, ("out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in")
    if isinstance(target, _BN):
        return name, "out"
    raise _KeptWhole(
        f"it reaches {name!r} ({type(target).__name__}), whose tensors this engine cannot slice"
    )


def _group_slices(
    group, graph: tp.DependencyGraph, shapes: dict[str, LayerShape], names: _ModelNames
) -> list[DimSlice]:
    """The tensor dimensions ``group`` prunes, one ``DimSlice`` per (owner, role)."""
    merged: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for item in group.items:
        key = _slice_key(item, graph, shapes, names)
        if key is None:
            continue
        positions = np.asarray([int(i) for i in item.idxs], dtype=np.int64)
        roots = np.asarray([int(i) for i in item.root_idxs], dtype=np.int64)
        if key in merged:
            old_pos, old_roots = merged[key]
            if np.array_equal(np.sort(old_pos), np.sort(positions)):
                continue
            positions = np.concatenate([old_pos, positions])
            roots = np.concatenate([old_roots, roots])
            if len(np.unique(positions)) != len(positions):
                raise _KeptWhole(f"it claims channels of {key[0]!r} twice")
        merged[key] = (positions, roots)
    return [DimSlice(name, role, pos, roots) for (name, role), (pos, roots) in merged.items()]


def _group_candidate(
    root_name: str,
    group,
    graph: tp.DependencyGraph,
    shapes: dict[str, LayerShape],
    names: _ModelNames,
    importance: str,
) -> _Candidate | None:
    """The unit that ``group`` (or the exception building it raised) would become.

    None for a single channel (nothing to decide); ``_KeptWhole`` where it cannot be pruned.
    """
    if isinstance(group, Exception):
        raise _KeptWhole(
            f"torch-pruning cannot map its channels ({type(group).__name__}: {str(group)[:120]})"
        )
    slices = _group_slices(group, graph, shapes, names)
    channels = shapes[root_name].out_size
    conv_groups = math.lcm(
        1,
        *(
            shapes[s.module].groups
            for s in slices
            if shapes[s.module].kind == "conv" and not shapes[s.module].depthwise
        ),
    )
    if channels % conv_groups:
        raise _KeptWhole(
            f"its {channels} channels do not split into {conv_groups} equal convolution groups"
        )
    size = channels // conv_groups
    if size < 2:
        if channels >= 2:
            raise _KeptWhole(
                f"its {channels} channels feed {conv_groups} convolution groups "
                "with one channel each: no position can go without emptying one"
            )
        return None
    for s in slices:
        s.roots = s.roots % size
    scores = _score(importance, group, channels, root_name)
    return _Candidate(root_name, size, slices, scores.reshape(conv_groups, size).mean(0))


def _reject(kept_whole: dict[str, str], candidate: _Candidate, reason: str) -> None:
    """Keep ``candidate`` whole, naming every layer it would have pruned."""
    others = sorted({s.module for s in candidate.slices if s.role == "out"} - {candidate.root})
    also = f" (its group also holds {', '.join(others)})" if others else ""
    kept_whole[candidate.root] = reason + also


def _full(shapes: dict[str, LayerShape], s: DimSlice) -> int:
    """The unpruned size of the dimension ``s`` slices."""
    shape = shapes[s.module]
    return shape.out_size if s.role == "out" else shape.in_size


def _claim(
    candidates: list[_Candidate], shapes: dict[str, LayerShape], kept_whole: dict[str, str]
) -> list[_Candidate]:
    """Drop groups that share a channel with an earlier group or break a grouped conv.

    Each dropped group is recorded in ``kept_whole`` with its reason; a group dropped for a
    clash and accepted in a later pass (its rival dropped) is cleared from it.
    """
    while True:
        owner: dict[tuple[str, str], np.ndarray] = {}
        accepted = []
        for c in candidates:
            clash = None
            for s in c.slices:
                taken = owner.get((s.module, s.role))
                if taken is not None and np.any(taken[s.positions] >= 0):
                    clash = (s.module, candidates[int(taken[s.positions].max())].root)
                    break
            if clash:
                _reject(
                    kept_whole,
                    c,
                    f"its channels in {clash[0]!r} are also pruned by the group of {clash[1]!r}",
                )
                continue
            index = candidates.index(c)
            for s in c.slices:
                key = (s.module, s.role)
                if key not in owner:
                    owner[key] = np.full(_full(shapes, s), -1, dtype=np.int64)
                owner[key][s.positions] = index
            accepted.append(c)
        broken = _nonuniform_grouped(accepted, shapes)
        if not broken:
            for c in accepted:  # accepted in this pass: an earlier clash no longer holds
                kept_whole.pop(c.root, None)
            return accepted
        for c in candidates:
            if c.root in broken:
                _reject(kept_whole, c, broken[c.root])
        candidates = [c for c in candidates if c.root not in broken]


def _nonuniform_grouped(
    candidates: list[_Candidate], shapes: dict[str, LayerShape]
) -> dict[str, str]:
    """Groups whose decisions would prune a grouped conv differently in its groups."""
    labels: dict[tuple[str, str], np.ndarray] = {}
    claimers: dict[tuple[str, str], list[str]] = {}
    for i, c in enumerate(candidates):
        for s in c.slices:
            shape = shapes[s.module]
            if shape.kind != "conv" or shape.groups == 1 or shape.depthwise:
                continue
            key = (s.module, s.role)
            if key not in labels:
                labels[key] = np.full((_full(shapes, s), 2), -1, dtype=np.int64)
            labels[key][s.positions, 0] = i
            labels[key][s.positions, 1] = s.roots
            claimers.setdefault(key, []).append(c.root)
    broken = {}
    for (module, role), label in labels.items():
        g = shapes[module].groups
        blocks = label.reshape(g, -1, 2)
        if not np.all(blocks == blocks[:1]):
            for root in claimers[(module, role)]:
                broken[root] = (
                    f"the grouped convolution {module!r} (groups={g}) would lose different "
                    "channels in different groups"
                )
    return broken
