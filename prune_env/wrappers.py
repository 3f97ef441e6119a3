"""Adapters between cost conventions.

- ``CostTuple``: Safety-Gymnasium's step signature, ``(obs, reward, cost, terminated,
  truncated, info)``, for libraries written against it.
- ``CostInfo``: the inverse, a 6-tuple env (e.g. Safety-Gymnasium's) back to Gymnasium's
  5-tuple with the cost in ``info["cost"]``, which is what this package's agents read.
- ``CostPenalty``: ``reward - beta * cost`` for unconstrained algorithms (a fixed-multiplier
  Lagrangian); the original reward stays in ``info["reward_raw"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym


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
