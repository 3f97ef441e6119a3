"""Adapters between cost conventions.

- ``CostTuple``: Safety-Gymnasium's step signature, ``(obs, reward, cost, terminated,
  truncated, info)``, for libraries written against it.
- ``CostInfo``: the inverse, a 6-tuple env (e.g. Safety-Gymnasium's) back to Gymnasium's
  5-tuple with the cost in ``info["cost"]``, which is what this package's agents read.
- ``CostPenalty``: ``reward - beta * cost`` for unconstrained algorithms (a fixed-multiplier
  Lagrangian); the original reward stays in ``info["reward_raw"]``.
- ``BudgetClip``: AMC's action clipping on a layer-wise pruning env, so that every episode
  meets an analytic budget by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from prune_env.constraints import all_within, largest_feasible

# What a search or a wrapper may use of a pruning env: its public API, nothing private, so
# that any env offering it (``PruneEnv`` whatever its evaluator) can be searched or clipped.
PRUNING_ENV_API = (
    "mode",
    "n_layers",
    "min_keep",
    "snap",
    "analytic_costs",
    "cost_limits",
    "counts",
    "current_layer",
    "decided_ratios",
)


def pruning_env(env: gym.Env, user: str, api: Sequence[str] = PRUNING_ENV_API) -> Any:
    """``env.unwrapped`` if it offers ``api`` (a pruning env's public API), else a
    ``ValueError`` naming ``user`` (what needs it) and what is missing."""
    base = env.unwrapped
    missing = [name for name in api if not hasattr(base, name)]
    if missing:
        raise ValueError(
            f"{user} needs a prune_env pruning env, got {type(base).__name__} (it lacks "
            f"{', '.join(missing)})"
        )
    return base


def _cost_of(info: Mapping[str, Any]) -> float:
    if "cost" not in info:
        raise KeyError("the wrapped env does not report info['cost']")
    return float(info["cost"])


class CostTuple(gym.Wrapper):
    """Make ``step`` return ``(obs, reward, cost, terminated, truncated, info)``."""

    def step(self, action):  # type: ignore[override]
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, _cost_of(info), terminated, truncated, info


class CostInfo(gym.Wrapper):
    """Turn a 6-tuple ``step`` into Gymnasium's 5-tuple with ``info["cost"]``."""

    def step(self, action):
        result = self.env.step(action)
        if len(result) != 6:
            raise ValueError(f"CostInfo wraps envs whose step returns 6 values, got {len(result)}")
        obs, reward, cost, terminated, truncated, info = result
        info = dict(info)
        info["cost"] = float(cost)
        return obs, reward, terminated, truncated, info


class CostPenalty(gym.Wrapper):
    """Reward ``r - beta * cost``; ``beta`` is one number, or one per name in ``info["costs"]``.

    Args:
        env: an env that reports ``info["cost"]`` (and ``info["costs"]`` for several).
        beta: penalty weight(s), >= 0.
    """

    def __init__(self, env: gym.Env, beta: float | Mapping[str, float] = 1.0) -> None:
        super().__init__(env)
        values = beta.values() if isinstance(beta, Mapping) else [beta]
        for value in values:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"beta must be finite and >= 0, got {beta!r}")
        self.beta = dict(beta) if isinstance(beta, Mapping) else float(beta)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if isinstance(self.beta, dict):
            costs = info.get("costs")
            if costs is None:
                raise KeyError("a per-cost beta needs info['costs'] from the wrapped env")
            unknown = set(self.beta) - set(costs)
            if unknown:
                raise KeyError(f"beta names {sorted(unknown)} not in info['costs'] {sorted(costs)}")
            penalty = sum(self.beta[k] * float(costs[k]) for k in self.beta)
        else:
            penalty = self.beta * _cost_of(info)
        info = dict(info)
        info["reward_raw"] = reward
        info["penalty"] = penalty
        return obs, float(reward) - penalty, terminated, truncated, info


class BudgetClip(gym.Wrapper):
    """AMC's budget clipping (He et al. 2018, "AMC: AutoML for Model Compression and
    Acceleration on Mobile Devices"): each layer-wise keep ratio is lowered, before its layer
    is pruned, to the largest value for which the budget can still be met if every later
    layer is pruned to ``min_keep``; so every episode meets the budget by construction (when
    the budget is reachable at all).

    Needs a layer-wise pruning env whose costs are analytic (params or FLOPs), as in AMC.
    ``bisection_steps``: halvings of the search for that largest value.
    """

    def __init__(self, env: gym.Env, bisection_steps: int = 25) -> None:
        super().__init__(env)
        base = pruning_env(env, "BudgetClip")
        if base.mode != "layerwise":
            raise ValueError("BudgetClip needs a layer-wise prune_env pruning env")
        if base.analytic_costs(np.ones(base.n_layers)) is None:
            raise ValueError("AMC's budget clipping needs analytic costs ('params' or 'flops')")
        self.prune_env = base
        self.bisection_steps = bisection_steps

    def _fits(self, ratios: np.ndarray) -> bool:
        return all_within(self.prune_env.analytic_costs(ratios), self.prune_env.cost_limits)

    def max_ratio(self) -> float:
        """Largest keep ratio for the current layer that leaves the budget reachable."""
        env = self.prune_env
        t = env.current_layer
        if t is None:
            raise RuntimeError("call reset() first")
        ratios = env.decided_ratios
        ratios[t + 1 :] = env.min_keep

        def with_ratio(a: float) -> np.ndarray:
            ratios[t] = a
            return ratios.copy()

        ratio, _ = largest_feasible(
            lambda a: self._fits(with_ratio(a)), env.min_keep, 1.0, self.bisection_steps
        )
        if ratio == 1.0:  # the layer may stay whole
            return 1.0
        # (out of reach, ``min_keep``: prune as hard as allowed) snapped, so exactly
        # representable as an action
        return float(env.snap(with_ratio(ratio))[t])

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        clipped = np.minimum(a, self.max_ratio()).astype(np.float32)
        return self.env.step(clipped)
