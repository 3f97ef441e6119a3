"""``make_engine``: the engine of a pruning granularity."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prune_env.engine.channel import ChannelEngine
from prune_env.engine.weight import WeightEngine


def make_engine(
    model: nn.Module,
    example_input: torch.Tensor,
    granularity: str = "channel",
    importance: str = "l1",
    ignored_layers: Sequence[str] = (),
) -> ChannelEngine | WeightEngine:
    """Build the engine for ``granularity`` ("channel" or "weight")."""
    if granularity == "channel":
        return ChannelEngine(model, example_input, importance, ignored_layers)
    if granularity == "weight":
        return WeightEngine(model, example_input, importance, ignored_layers)
    raise ValueError(f"unknown granularity {granularity!r}; expected 'channel' or 'weight'")
