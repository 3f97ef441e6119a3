"""Constraints: the one home of the feasibility test, the bisection onto a budget and the
verdict on a measured cost. Every caller in the package uses these, so that the env, the
agents, the job and ``evaluate.py`` never disagree on whether a network meets its budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

# Costs summed over an episode's steps carry rounding error: a cost this far over its budget
# still meets it.
FEASIBILITY_ATOL = 1e-12
# The costs counted on the network (exact, the same on every count); any other is measured.
ANALYTIC_COSTS = ("params", "flops")


def within_budget(cost: float, budget: float) -> bool:
    """Whether ``cost`` meets ``budget`` (the one feasibility test of the package)."""
    return float(cost) <= float(budget) + FEASIBILITY_ATOL


def all_within(costs: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    """Whether every cost named in ``limits`` meets its budget."""
    return all(within_budget(costs[name], limit) for name, limit in limits.items())


def check_budget(budget: float, name: str = "budget") -> float:
    """``budget`` as a float in (0, 1]; ``ValueError`` naming ``name`` otherwise."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {budget!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {budget!r}")
    return value


def largest_feasible(
    feasible: Callable[[float], bool], lo: float = 0.0, hi: float = 1.0, steps: int = 30
) -> tuple[float, bool]:
    """The largest ``t`` in ``[lo, hi]`` with ``feasible(t)``, for a one-parameter family whose
    cost grows with ``t`` (bisection).

    ``hi`` is tried first, then ``lo``; then ``steps`` halvings. Returns ``(t, True)``, or
    ``(lo, False)`` when even ``lo`` is infeasible (the budget is out of the family's reach).
    ``feasible`` is called in that order, once per probe (it may run an episode).
    """
    if feasible(hi):
        return hi, True
    if not feasible(lo):
        return lo, False
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo, True


def is_measured(cost: str | Callable[..., float]) -> bool:
    """Whether ``cost`` (a name or a callable) is measured (latency, a callable) rather than
    counted (params, FLOPs): a measured cost differs between two measurements of one network."""
    return callable(cost) or cost not in ANALYTIC_COSTS


def final_verdict(measured: bool, search_feasible: bool, cost: float, budget: float) -> bool:
    """Whether a delivered network meets its budget, after fine-tuning.

    An analytic cost (params, FLOPs) is recounted on the delivered network and must meet the
    budget. A measured cost (latency, a callable) is only re-measured: a second timing of the
    same network on a shared machine differs from the search's, so the verdict is the
    search's, and the re-measured fraction is reported beside it.
    """
    if measured:
        return bool(search_feasible)
    return bool(search_feasible) and within_budget(cost, budget)
