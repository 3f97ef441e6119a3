"""Counting: the analytic parameters and MACs of a network pruned to given channel counts.

``LayerShape`` is what the resource model knows of one prunable tensor owner (Conv, Linear,
BatchNorm, an unwrapped ``nn.Parameter``) and ``DimSlice`` which of its positions a unit
prunes; ``_channel_resources`` counts a candidate network from them without building it.
``Unit`` carries the features the agent sees of a decision, including the share of the
base resources it controls. ``measure_resources`` counts any module independently, which is
how every engine's count is checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prune_env.engine.tracing import _BN, _CONV, _module_spatial


@dataclass
class DimSlice:
    """The positions of one tensor dimension that one channel group prunes."""

    module: str  # module name, or the full name of an unwrapped nn.Parameter
    role: str  # "out" (weight dim 0, BN features, a parameter's channel dim) or "in" (dim 1)
    positions: np.ndarray  # indices along that dimension
    roots: np.ndarray  # the decision (channel of the group) each position belongs to
    unit: int = -1  # index of the unit (decision) that owns this slice
    order: np.ndarray = field(init=False)  # positions sorted by the rank of their decision
    kept_count: np.ndarray = field(init=False)  # kept_count[k]: positions kept with top-k


@dataclass
class Unit:
    """One decision of the agent: a channel group (channel mode) or one layer (weight mode)."""

    name: str  # name of the root module
    size: int  # channels (decisions) in the group, or weights in the layer
    layer_type: int  # 0 conv, 1 linear
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    fmap: int  # spatial positions of the root's output (H*W)
    params_share: float  # share of the base parameters that this unit prunes
    flops_share: float  # share of the base MACs that this unit prunes


@dataclass
class LayerShape:
    """What the analytic resource model needs to know about one prunable tensor owner."""

    kind: str  # "conv", "linear", "bn", "param"
    out_size: int  # out channels / BN features / size of a parameter's channel dim
    in_size: int  # in channels (Conv/Linear); elements per channel (param); 0 for BN
    kernel_volume: int  # product of the kernel size (1 for Linear, 0 for BN)
    groups: int
    has_bias: bool  # Conv/Linear bias; BN: affine
    spatial: int  # output positions per sample, 0 for BN
    depthwise: bool = False  # groups == in == out: in and out channels are one dimension
    param_dim: int = 0  # the channel dimension of an unwrapped parameter
    out_slices: list[DimSlice] = field(default_factory=list)
    in_slices: list[DimSlice] = field(default_factory=list)


def _layer_shapes(model: nn.Module, spatial: dict[str, int]) -> dict[str, LayerShape]:
    shapes: dict[str, LayerShape] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONV):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            shapes[name] = LayerShape(
                "conv",
                m.out_channels,
                m.in_channels,
                math.prod(m.kernel_size),
                m.groups,
                m.bias is not None,
                spatial.get(name, 0),
                depthwise=depthwise,
            )
        elif isinstance(m, nn.Linear):
            shapes[name] = LayerShape(
                "linear",
                m.out_features,
                m.in_features,
                1,
                1,
                m.bias is not None,
                spatial.get(name, 0),
            )
        elif isinstance(m, _BN):
            shapes[name] = LayerShape("bn", m.num_features, 0, 0, 1, m.affine, 0)
    return shapes


def _layer_counts(shape: LayerShape, out_size: int, in_size: int) -> tuple[int, int]:
    """(parameters, MACs) of a Conv/Linear/BN/parameter with the given channel counts."""
    if shape.kind == "bn":
        return (2 * out_size if shape.has_bias else 0), 0
    if shape.kind == "param":
        return out_size * shape.in_size, 0
    # A depthwise conv keeps one input channel per output channel, whatever remains.
    per_output = 1 if shape.depthwise else in_size // shape.groups
    weights = out_size * per_output * shape.kernel_volume
    params = weights + (out_size if shape.has_bias else 0)
    return params, weights * shape.spatial


def _unit(
    name: str,
    size: int,
    module: nn.Module,
    shape: LayerShape,
    params_share: float,
    flops_share: float,
) -> Unit:
    """The features of the unit rooted at ``module`` (named ``name``) with ``size`` decisions."""
    if isinstance(module, _CONV):
        layer_type, kernel, stride = 0, int(module.kernel_size[0]), int(module.stride[0])
    else:
        layer_type, kernel, stride = 1, 1, 1
    return Unit(
        name=name,
        size=size,
        layer_type=layer_type,
        in_channels=shape.in_size,
        out_channels=shape.out_size,
        kernel=kernel,
        stride=stride,
        fmap=shape.spatial,
        params_share=params_share,
        flops_share=flops_share,
    )


def _unit_shares(
    units: list[Unit],
    resources: Callable[[np.ndarray], tuple[int, int]],
    total_params: int,
    total_macs: int,
) -> None:
    """Set each unit's shares: the base parameters and MACs that emptying it would remove."""
    full = np.array([u.size for u in units], dtype=np.int64)
    total = resources(full)
    for u, unit in enumerate(units):
        emptied = full.copy()
        emptied[u] = 0  # resources() accepts 0: the unit's share is what it controls
        params, macs = resources(emptied)
        unit.params_share = (total[0] - params) / max(total_params, 1)
        unit.flops_share = (total[1] - macs) / max(total_macs, 1)


def _dim_size(shape: LayerShape, role: str, counts: np.ndarray) -> int:
    """Size of ``shape``'s "out" or "in" dimension when unit i keeps ``counts[i]`` channels."""
    if role == "in" and shape.depthwise:
        role = "out"
    slices = shape.out_slices if role == "out" else shape.in_slices
    size = shape.out_size if role == "out" else shape.in_size
    for s in slices:
        size += int(s.kept_count[counts[s.unit]]) - len(s.positions)
    return size


def _channel_resources(
    shapes: dict[str, LayerShape], fixed_params: int, counts: Sequence[int]
) -> tuple[int, int]:
    """Exact (parameters, MACs) of the network pruned to ``counts`` channels per unit.

    ``fixed_params`` are the parameters outside every shape (they never change).
    """
    counts = np.asarray(counts, dtype=np.int64)
    params, macs = fixed_params, 0
    for shape in shapes.values():
        out = _dim_size(shape, "out", counts)
        inp = _dim_size(shape, "in", counts) if shape.kind in ("conv", "linear") else 0
        p, m = _layer_counts(shape, out, inp)
        params += p
        macs += m
    return params, macs


def measure_resources(
    model: nn.Module, example_input: torch.Tensor, nonzero: bool = False
) -> tuple[int, int]:
    """(parameters, MACs) of any network, counted on the module itself, not from an engine.

    MACs are those of Conv/Linear layers for one sample, as in the env's cost. With
    ``nonzero``, zero weights count neither as parameters nor as multiply-accumulates (what
    weight granularity reports). For a network built by an engine this equals
    ``engine.resources(counts)``: the independent check of a saved pruned model.
    """
    device = next(model.parameters()).device
    spatial = _module_spatial(model, example_input.to(device))
    params, macs = sum(p.numel() for p in model.parameters()), 0
    for name, shape in _layer_shapes(model, spatial).items():
        if shape.kind == "bn":
            continue
        weight = model.get_submodule(name).weight
        weights = int(torch.count_nonzero(weight)) if nonzero else weight.numel()
        params -= weight.numel() - weights  # only Conv/Linear weights are pruned to zero
        macs += weights * shape.spatial
    return params, macs
