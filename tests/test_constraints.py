"""prune_env.constraints: the bisection onto a budget and the verdict after fine-tuning."""

import pytest

from prune_env.constraints import (
    FEASIBILITY_ATOL,
    final_verdict,
    is_measured,
    largest_feasible,
    within_budget,
)


def _probed(threshold: float):
    """A family whose member t meets the budget while t <= threshold; records every probe."""
    probes: list[float] = []

    def feasible(t: float) -> bool:
        probes.append(t)
        return t <= threshold

    return feasible, probes


def test_largest_feasible_bisects_in_a_fixed_order():
    # Worked by hand, threshold 0.3 on [0, 1], 3 halvings: 1 no, 0 yes; 0.5 no -> [0, 0.5];
    # 0.25 yes -> [0.25, 0.5]; 0.375 no -> [0.25, 0.375]; the answer is the lower end.
    feasible, probes = _probed(0.3)
    assert largest_feasible(feasible, 0.0, 1.0, steps=3) == (0.25, True)
    assert probes == [1.0, 0.0, 0.5, 0.25, 0.375]
    # another lower end: [0.2, 1], threshold 0.7, 2 halvings: 0.6 yes, then 0.8 no
    feasible, probes = _probed(0.7)
    assert largest_feasible(feasible, 0.2, 1.0, steps=2) == (0.6, True)
    assert probes == [1.0, 0.2, 0.6, 0.8]


def test_largest_feasible_stops_at_either_end():
    feasible, probes = _probed(2.0)  # everything fits: the upper end, one probe
    assert largest_feasible(feasible, 0.0, 1.0, steps=30) == (1.0, True) and probes == [1.0]
    feasible, probes = _probed(-1.0)  # nothing fits: the lower end, flagged, two probes
    assert largest_feasible(feasible, 0.1, 1.0, steps=30) == (0.1, False)
    assert probes == [1.0, 0.1]
    feasible, probes = _probed(0.3)  # the default: 30 halvings onto the boundary
    t, found = largest_feasible(feasible)
    assert found and len(probes) == 32 and 0.3 - 2**-30 < t <= 0.3


@pytest.mark.parametrize(
    ("measured", "search_feasible", "cost", "expected"),
    [
        (False, True, 0.29, True),  # counted, and the recount meets the budget
        (False, True, 0.3 + 1e-13, True),  # within the feasibility tolerance
        (False, True, 0.31, False),  # the recount breaks it: not feasible, whatever the search
        (False, False, 0.29, False),  # the search's candidate was infeasible
        (True, True, 0.35, True),  # measured: a second measurement does not overturn it
        (True, False, 0.1, False),  # nor does a lucky one rescue an infeasible candidate
    ],
)
def test_final_verdict(measured, search_feasible, cost, expected):
    assert final_verdict(measured, search_feasible, cost, 0.3) is expected


def test_measured_costs_are_latency_and_callables():
    assert not is_measured("params") and not is_measured("flops")
    assert is_measured("latency") and is_measured(lambda model: 1.0)


def test_a_cost_on_the_budget_meets_it():
    # the constraint is cost <= budget: the boundary itself, and the rounding allowance on top
    for budget in (0.1, 0.3, 1.0, 25.0):
        assert within_budget(budget, budget)
        assert within_budget(budget + FEASIBILITY_ATOL, budget)
        assert not within_budget(budget + 1e3 * FEASIBILITY_ATOL, budget)
