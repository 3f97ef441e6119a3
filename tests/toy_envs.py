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
