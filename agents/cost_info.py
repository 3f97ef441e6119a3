"""Reading costs and their limits from an env's ``info`` dicts (the conventions
``PPOLagrangian`` accepts): one cost in ``info["cost"]`` with ``info["cost_limit"]``, several
in ``info["costs"]`` with ``info["cost_limits"]``, dicts read by name."""

from __future__ import annotations

from typing import Any

import numpy as np


def read_costs(
    infos: list[dict[str, Any]], n_costs: int, names: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    """The costs of one step of every env copy, ``[len(infos), n_costs]``, and the cost names
    (taken from the first ``info["costs"]`` dict when ``names`` is None: a fixed order)."""
    costs = np.zeros((len(infos), n_costs))
    for i, info in enumerate(infos):
        if n_costs == 1:
            if "cost" not in info:
                raise KeyError("PPOLagrangian needs the env to report info['cost']")
            costs[i, 0] = float(info["cost"])
            continue
        if "costs" not in info:
            raise KeyError(f"n_costs={n_costs} needs info['costs'] (a dict) from the env")
        values = info["costs"]
        if names is None and isinstance(values, dict):
            names = list(values)[:n_costs]
        ordered = [values[k] for k in names] if names else list(values)
        if len(ordered) < n_costs:
            raise ValueError(f"info['costs'] has {len(ordered)} entries, expected {n_costs}")
        costs[i] = ordered[:n_costs]
    return costs, names


def limits_from_info(
    info: dict[str, Any], n_costs: int, names: list[str] | None
) -> tuple[list[float] | None, list[str] | None]:
    """The limits an env reports in its info (None if it reports none), and the cost names:
    ``info["cost_limit"]`` for one cost, ``info["cost_limits"]`` (a dict, by name) for several."""
    if n_costs == 1:
        return ([float(info["cost_limit"])] if "cost_limit" in info else None), names
    values = info.get("cost_limits")
    if not isinstance(values, dict):
        if "cost_limit" in info:
            raise ValueError(
                f"n_costs={n_costs} but the env reports one info['cost_limit']: give each "
                "cost its limit in info['cost_limits'] (a dict) or pass cost_limit=[...]"
            )
        return None, names
    names = names or list(values)[:n_costs]
    missing = [n for n in names if n not in values]
    if missing or len(names) < n_costs:
        raise ValueError(
            f"info['cost_limits'] {sorted(values)} lacks limits for the costs {missing or names}"
        )
    return [float(values[n]) for n in names], list(names)
