"""Constraint costs: the fraction of the base network's resource that a pruned network keeps.

Each cost is a cost-model object (``CostModel``): analytic ones are computed from the kept
counts without building a network, measured ones look at the built network. Built in:
"params" (parameters; non-zero ones under weight granularity), "flops" (multiply-accumulates
of Conv/Linear layers), "latency" (measured median wall time of a forward pass on a fixed
batch). A new cost is a ``CostModel`` subclass registered by name with ``register_cost``.
Any callable ``f(model) -> float`` is a cost too: the env divides ``f(pruned)`` by
``f(base)``, so the resource may be anything the user can measure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
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
        """Computed from the kept counts alone (no network built, nothing timed)."""
        return self.fn is None and COST_MODELS[self.name].analytic


def _spec(key: str | CostFn, budget: float) -> CostSpec:
    if callable(key):
        name = getattr(key, "__name__", type(key).__name__)
        return CostSpec(name, check_budget(budget, f"budget of {name}"), key)
    if key not in COST_MODELS:
        raise ValueError(
            f"unknown cost {key!r}; expected one of {list(COST_MODELS)} or a callable "
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


# ----------------------------------------------------------------------------- cost models
@dataclass
class Candidate:
    """A pruned network as the costs see it: the kept count per layer, its analytic
    parameter and FLOP counts, and the built network (None while only counted)."""

    counts: np.ndarray
    params: int
    flops: int
    net: nn.Module | None = None


@dataclass
class CostContext:
    """What a cost model may read when it is built: the env's engine (totals, structure),
    the base network and the batch latency is timed on."""

    engine: Any
    base: nn.Module
    latency_batch: torch.Tensor
    latency_repeats: int = 5


class CostModel:
    """One constraint's cost: ``fraction(candidate)`` is the share of the base network's
    resource the candidate keeps. ``analytic`` costs never need ``candidate.net``."""

    analytic: ClassVar[bool] = False

    def __init__(self, spec: CostSpec, context: CostContext) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def budget(self) -> float:
        return self.spec.budget

    def fraction(self, candidate: Candidate) -> float:
        raise NotImplementedError


class ParamsCost(CostModel):
    """Parameters kept (non-zero ones under weight granularity), counted."""

    analytic = True

    def __init__(self, spec: CostSpec, context: CostContext) -> None:
        super().__init__(spec, context)
        self.total = context.engine.total_params

    def fraction(self, candidate: Candidate) -> float:
        return candidate.params / self.total


class FlopsCost(CostModel):
    """Conv/Linear multiply-accumulates kept (of non-zero weights under weight
    granularity), counted."""

    analytic = True

    def __init__(self, spec: CostSpec, context: CostContext) -> None:
        super().__init__(spec, context)
        self.total = max(context.engine.total_macs, 1)

    def fraction(self, candidate: Candidate) -> float:
        return candidate.flops / self.total


class LatencyCost(CostModel):
    """Median wall time of the built network on the latency batch, over the base's."""

    def __init__(self, spec: CostSpec, context: CostContext) -> None:
        super().__init__(spec, context)
        self.batch, self.repeats = context.latency_batch, context.latency_repeats
        self.base = measure_latency(context.base, self.batch, self.repeats)

    def fraction(self, candidate: Candidate) -> float:
        return measure_latency(candidate.net, self.batch, self.repeats) / self.base


class CallableCost(CostModel):
    """The user's ``f(model) -> float``: ``f(pruned) / f(base)``."""

    def __init__(self, spec: CostSpec, context: CostContext) -> None:
        super().__init__(spec, context)
        self.base = float(spec.fn(context.base))
        if not self.base > 0:
            raise ValueError(f"cost {spec.name!r} of the base model must be > 0")

    def fraction(self, candidate: Candidate) -> float:
        return float(self.spec.fn(candidate.net)) / self.base


COST_MODELS: dict[str, type[CostModel]] = {
    "params": ParamsCost,
    "flops": FlopsCost,
    "latency": LatencyCost,
}


def register_cost(name: str, model: type[CostModel]) -> None:
    """Make ``cost=name`` build ``model`` (a ``CostModel`` subclass) in every env."""
    if not (isinstance(model, type) and issubclass(model, CostModel)):
        raise TypeError(f"a cost model must be a CostModel subclass, got {model!r}")
    if name in COST_MODELS:
        raise ValueError(f"cost {name!r} is already registered ({COST_MODELS[name].__name__})")
    COST_MODELS[name] = model


def build_cost_models(specs: list[CostSpec], context: CostContext) -> list[CostModel]:
    """One cost model per constraint, in the order given (the first is the primary)."""
    return [
        CallableCost(spec, context)
        if spec.fn is not None
        else COST_MODELS[spec.name](spec, context)
        for spec in specs
    ]
