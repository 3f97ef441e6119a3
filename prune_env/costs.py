"""Constraint costs: the fraction of the base network's resource that a pruned network keeps.

Built in: "params" (parameters; non-zero ones under weight granularity), "flops" (multiply-
accumulates of Conv/Linear layers), "latency" (measured median wall time of a forward pass on a
fixed batch). Any callable ``f(model) -> float`` is a cost too: the env divides ``f(pruned)`` by
``f(base)``, so the resource may be anything the user can measure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from prune_env.constraints import check_budget

BUILTIN_COSTS = ("params", "flops", "latency")
CostFn = Callable[[nn.Module], float]


@dataclass
class CostSpec:
    """One constraint: a resource and the largest fraction of it the pruned net may keep."""

    name: str
    budget: float
    fn: CostFn | None = None  # None for the built-in resources

    @property
    def analytic(self) -> bool:
        return self.name in ("params", "flops") and self.fn is None


def _spec(key: str | CostFn, budget: float) -> CostSpec:
    if callable(key):
        name = getattr(key, "__name__", type(key).__name__)
        return CostSpec(name, check_budget(budget, f"budget of {name}"), key)
    if key not in BUILTIN_COSTS:
        raise ValueError(
            f"unknown cost {key!r}; expected one of {list(BUILTIN_COSTS)} or a callable "
            "f(model) -> float"
        )
    return CostSpec(key, check_budget(budget, f"budget of {key}"))


def parse_costs(
    cost: str | CostFn, budget: float, costs: Mapping[str | CostFn, float] | None
) -> list[CostSpec]:
    """The env's constraints: ``costs`` (several, first one primary) or ``cost`` with ``budget``."""
    if costs is None:
        return [_spec(cost, budget)]
    if not isinstance(costs, Mapping) or not costs:
        raise ValueError(f"costs must be a non-empty dict of cost -> budget, got {costs!r}")
    specs = [_spec(key, value) for key, value in costs.items()]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"cost names must be unique, got {names}")
    return specs


@torch.inference_mode()
def measure_latency(
    model: nn.Module, batch: torch.Tensor, repeats: int = 5, warmup: int = 2
) -> float:
    """Median seconds of one forward pass of ``model`` on ``batch`` (CUDA synchronised)."""
    model.eval()
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    for _ in range(warmup):
        model(batch)
    sync()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
