"""Small constrained envs for the agent tests (no network, milliseconds per step)."""

import gymnasium as gym
import numpy as np


class ConcaveBandit(gym.Env):
    """One-step episodes: action a in [-1, 1] maps to x = (a + 1) / 2 in [0, 1].

    reward = 1 - (x - 1)^2 (greedy optimum x = 1), cost = x. With cost_limit 0.3 the
    constrained optimum is x = 0.3, where lambda* = dr/dx = 2 * (1 - 0.3) = 1.4.
    """

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, cost_limit: float = 0.3, advertise: bool = True):
        self.limit = cost_limit
        self.advertise = advertise

    @property
    def cost_limit(self) -> float:
        if not self.advertise:  # an env that only reports its limit in info
            raise AttributeError("cost_limit")
        return self.limit

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        x = (float(np.clip(action[0], -1, 1)) + 1) / 2
        info = {"cost": x, "cost_limit": self.limit}
        return np.zeros(1, np.float32), 1 - (x - 1) ** 2, True, False, info


class TwoCostChain(gym.Env):
    """Three-step episodes with two costs in info["costs"]; reward = sum of actions."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Box(0, 1, (2,), np.float32)

    def __init__(self):
        self.cost_limits = {"heat": 0.5, "noise": 1.0}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = np.clip(action, 0, 1)
        self.t += 1
        costs = {"heat": float(a[0]) / 3, "noise": float(a[1]) / 3}
        info = {"cost": costs["heat"], "costs": costs, "cost_limits": self.cost_limits}
        obs = np.full(1, self.t / 3, np.float32)
        return obs, float(a.sum()), self.t == 3, False, info


class FixedCostEnv(gym.Env):
    """Episodes of ``length`` steps whose costs do not depend on the actions.

    Each step reports ``costs[name] / length`` per cost (so an episode's summed cost is
    ``costs[name]``) in ``info["costs"]`` (in the order given), with ``info["cost"]`` the first;
    the limits are advertised as the ``cost_limits`` attribute, or only in
    ``info["cost_limits"]`` / ``info["cost_limit"]`` when ``advertise`` is False. The reward is
    the action's first component. Lambda's trajectory is then known in advance.
    """

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, costs, limits, length=1, advertise=True, info_limit_key="cost_limits"):
        self.costs, self.limits, self.length = dict(costs), dict(limits), length
        self.advertise, self.info_limit_key = advertise, info_limit_key
        self.t = 0

    def __getattr__(self, name):
        if name == "cost_limits" and self.advertise:
            return self.limits
        raise AttributeError(name)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        costs = {k: v / self.length for k, v in self.costs.items()}
        info = {"cost": next(iter(costs.values())), "costs": costs}
        if self.info_limit_key == "cost_limits":
            info["cost_limits"] = dict(self.limits)
        else:
            info["cost_limit"] = next(iter(self.limits.values()))
        obs = np.full(1, self.t / self.length, np.float32)
        return obs, float(action[0]), self.t >= self.length, False, info


class EndlessCostEnv(gym.Env):
    """Never terminates (wrap it in a TimeLimit); cost 1 and reward 0 at every step."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, min(self.t / 10, 1.0), np.float32), 0.0, False, False, {"cost": 1.0}


class ConcaveAllocation(gym.Env):
    """A constrained allocation shaped like pruning, with a known optimum.

    ``n`` steps; at step ``i`` the action in [0, 1] is the share ``x_i`` kept of item ``i``
    (observation: one-hot step index). At the end: reward ``sum_i w_i sqrt(x_i) / sum_i w_i``
    (concave, so keeping everything is the unconstrained optimum), cost
    ``sum_i c_i x_i / sum_i c_i`` (the fraction of a resource kept); 0 before. The constrained
    optimum, by the KKT conditions: ``x_i = min(1, (w_i / (2 nu c_i))^2)`` with ``nu`` set so
    that the cost equals the limit (``optimum()``).
    """

    action_space = gym.spaces.Box(0, 1, (1,), np.float32)

    def __init__(self, weights=(3.0, 1.0, 2.0, 0.5, 1.5), prices=(1.0, 3.0, 1.0, 2.0, 4.0),
                 cost_limit=0.3):  # fmt: skip
        self.w, self.c = np.asarray(weights, float), np.asarray(prices, float)
        self.n, self.cost_limit = len(self.w), cost_limit
        self.observation_space = gym.spaces.Box(0, 1, (self.n,), np.float32)

    def _obs(self):
        obs = np.zeros(self.n, np.float32)
        obs[min(self.t, self.n - 1)] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, np.zeros(self.n)
        return self._obs(), {}

    def value(self, x):
        x = np.clip(np.asarray(x, float), 0, 1)
        return float(self.w @ np.sqrt(x) / self.w.sum()), float(self.c @ x / self.c.sum())

    def optimum(self):
        lo, hi = 1e-6, 1e6  # bisection on the price nu
        for _ in range(200):
            nu = np.sqrt(lo * hi)
            x = np.minimum(1.0, (self.w / (2 * nu * self.c)) ** 2)
            lo, hi = (nu, hi) if self.value(x)[1] > self.cost_limit else (lo, nu)
        return x, *self.value(x)

    def step(self, action):
        self.x[self.t] = float(np.clip(action[0], 0, 1))
        self.t += 1
        done = self.t == self.n
        reward, cost = self.value(self.x) if done else (0.0, 0.0)
        info = {"cost": cost, "cost_limit": self.cost_limit}
        return self._obs(), reward, done, False, info


class CyclingCostEnv(FixedCostEnv):
    """One-step episodes whose cost cycles through ``values`` (episode k costs values[k % n])."""

    def __init__(self, values, limit):
        super().__init__({"c": values[0]}, {"c": limit})
        self.values, self.k = list(values), 0

    def step(self, action):
        self.costs = {"c": self.values[self.k % len(self.values)]}
        self.k += 1
        return super().step(action)
