"""Constrained problems with known optima, to check constrained-RL agents.

Each problem is an allocation shaped like pruning: one step per item, the action (a Box in
[0, 1]) is the share ``x_i`` of item ``i`` kept, the observation a one-hot of the step. The
optimum is an open-loop allocation, computed exactly from the KKT conditions (the reward is
concave, the cost convex, both separable), so an agent's deterministic policy can be scored
as a share of the optimal reward at a cost against the limit.

- ``ConcaveLinear``: reward and cost at the end only, like pruning's accuracy and resource
  fraction. Reward ``sum_i w_i sqrt(x_i) / sum_i w_i``; cost ``sum_i c_i x_i / sum_i c_i``.
- ``LogQuadratic``: a reward and a cost at every step. Reward
  ``w_i log(1 + k x_i) / sum_j w_j log(1 + k)``; cost ``c_i x_i^2 / sum_j c_j``.

``cost_scale`` multiplies every cost and the limit (the same problem in other units: a
Safety-Gymnasium task's limit is 25, a pruning budget 0.1). Nothing else changes: the optimal
allocation, the reward and the feasibility are the same in every unit.

    from agents.problems import make_problem
    env = make_problem("concave_linear", budget=0.1, cost_scale=20.0)
    x_opt, reward_opt, cost_opt = env.optimum()
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

# Item values and prices: fixed, heterogeneous (a 20x range of price per value, so that the
# optimum keeps some items whole and others barely at tight budgets).
WEIGHTS = (3.0, 1.0, 2.0, 0.5, 1.5, 2.5, 0.8, 1.2)
PRICES = (1.0, 3.0, 1.0, 2.0, 4.0, 0.5, 1.5, 2.5)


class Allocation(gym.Env):
    """Common part: items, steps, spaces, the budget and its units, the exact optimum.

    Args:
        budget: the limit on the episode cost, in the problem's natural units (a fraction of
            the resource, in (0, 1]).
        cost_scale: every cost and the limit multiplied by it (> 0).
        weights, prices: the items' values ``w_i`` and prices ``c_i`` (> 0, same length).

    ``cost_limit`` (attribute and ``info["cost_limit"]``) is ``budget * cost_scale``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)

    def __init__(
        self,
        budget: float = 0.25,
        cost_scale: float = 1.0,
        weights: tuple[float, ...] = WEIGHTS,
        prices: tuple[float, ...] = PRICES,
    ) -> None:
        if not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {budget!r}")
        if not (np.isfinite(cost_scale) and cost_scale > 0):
            raise ValueError(f"cost_scale must be a positive number, got {cost_scale!r}")
        self.w, self.c = np.asarray(weights, float), np.asarray(prices, float)
        if (
            self.w.shape != self.c.shape
            or self.w.ndim != 1
            or (self.w <= 0).any()
            or (self.c <= 0).any()
        ):
            raise ValueError(
                f"weights and prices must be positive and of one length, got {weights}, {prices}"
            )
        self.n = len(self.w)
        self.budget, self.cost_scale = float(budget), float(cost_scale)
        self.cost_limit = self.budget * self.cost_scale
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.n,), np.float32)
        self.t = 0
        self.x = np.zeros(self.n)

    # the problem, in natural units (cost_scale 1): per-item reward and cost, and the
    # allocation that maximises the Lagrangian at price nu
    def item_values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def best_response(self, nu: float) -> np.ndarray:
        raise NotImplementedError

    def value(self, x: Any) -> tuple[float, float]:
        """(reward, cost in the env's units) of the allocation ``x``."""
        x = np.clip(np.asarray(x, float), 0.0, 1.0)
        reward, cost = self.item_values(x)
        return float(reward.sum()), float(cost.sum()) * self.cost_scale

    def optimum(self) -> tuple[np.ndarray, float, float]:
        """The constrained optimum ``(x*, reward*, cost*)`` (cost in the env's units): the
        Lagrangian's maximiser at the price ``nu`` where the cost meets the limit (bisection;
        the cost falls as the price rises)."""
        if self.value(np.ones(self.n))[1] <= self.cost_limit:
            x = np.ones(self.n)
        else:
            lo, hi = 1e-9, 1e9
            for _ in range(200):
                nu = np.sqrt(lo * hi)
                if self.value(self.best_response(nu))[1] > self.cost_limit:
                    lo = nu
                else:
                    hi = nu
            x = self.best_response(hi)  # the feasible side
        return x, *self.value(x)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n, np.float32)
        obs[min(self.t, self.n - 1)] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t, self.x = 0, np.zeros(self.n)
        return self._obs(), {}

    def step(self, action: Any):
        if self.t >= self.n:
            raise RuntimeError("step() after the episode ended: call reset()")
        self.x[self.t] = float(np.clip(np.asarray(action, float).reshape(-1)[0], 0.0, 1.0))
        self.t += 1
        done = self.t == self.n
        reward, cost = self._step_reward_cost(done)
        info = {"cost": cost, "cost_limit": self.cost_limit}
        if done:
            info["keep_ratios"] = self.x.tolist()
        return self._obs(), reward, done, False, info

    def _step_reward_cost(self, done: bool) -> tuple[float, float]:
        raise NotImplementedError


class ConcaveLinear(Allocation):
    """Terminal reward ``sum w sqrt(x) / sum w`` and cost ``sum c x / sum c`` (see module)."""

    def item_values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.w * np.sqrt(x) / self.w.sum(), self.c * x / self.c.sum()

    def best_response(self, nu: float) -> np.ndarray:
        # d/dx [w sqrt(x) / W - nu c x / C] = 0  ->  sqrt(x) = w C / (2 nu c W)
        root = self.w * self.c.sum() / (2 * nu * self.c * self.w.sum())
        return np.minimum(1.0, root**2)

    def _step_reward_cost(self, done: bool) -> tuple[float, float]:
        return self.value(self.x) if done else (0.0, 0.0)


class LogQuadratic(Allocation):
    """Per-step reward ``w_i log(1 + k x_i) / sum_j w_j log(1 + k)`` and cost
    ``c_i x_i^2 / sum_j c_j`` (see module); ``k`` (default 10) sets how fast the reward
    saturates."""

    def __init__(self, *args: Any, k: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k = float(k)

    def item_values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        norm = (self.w * np.log1p(self.k)).sum()
        return self.w * np.log1p(self.k * x) / norm, self.c * x**2 / self.c.sum()

    def best_response(self, nu: float) -> np.ndarray:
        # w k / ((1 + k x) R) = 2 nu c x / C  ->  a x^2 + b x - q = 0 with the values below
        r, cc = (self.w * np.log1p(self.k)).sum(), self.c.sum()
        a, b, q = 2 * nu * self.c * self.k / cc, 2 * nu * self.c / cc, self.w * self.k / r
        return np.minimum(1.0, (-b + np.sqrt(b * b + 4 * a * q)) / (2 * a))

    def _step_reward_cost(self, done: bool) -> tuple[float, float]:
        i = self.t - 1
        only = np.zeros(self.n)
        only[i] = self.x[i]
        reward, cost = self.item_values(only)
        return float(reward[i]), float(cost[i]) * self.cost_scale


PROBLEMS: dict[str, type[Allocation]] = {
    "concave_linear": ConcaveLinear,
    "log_quadratic": LogQuadratic,
}


def make_problem(name: str, **kwargs: Any) -> Allocation:
    """The problem called ``name`` (``PROBLEMS``); keyword arguments go to its class."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](**kwargs)
