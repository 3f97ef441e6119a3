"""AMC's recipe (He et al. 2018, "AMC: AutoML for Model Compression and Acceleration on Mobile
Devices"): an off-policy actor-critic whose actions are clipped so that the budget is met by
construction, with reward = accuracy.

``BudgetClip`` does the clipping: before layer t is pruned, its keep ratio is lowered to the
largest value for which the budget can still be met if every later layer is pruned to
``min_keep``. The budget must be analytic (params or FLOPs), as in AMC.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from prune_env.envs.pruning import PruneEnv


class BudgetClip(gym.Wrapper):
    """Clip each layer-wise keep ratio so that the episode's cost cannot exceed the budget."""

    def __init__(self, env: gym.Env, bisection_steps: int = 25) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, PruneEnv) or base.mode != "layerwise":
            raise ValueError("BudgetClip needs a layer-wise prune_env pruning env")
        if base.analytic_costs(np.ones(base.n_layers)) is None:
            raise ValueError("AMC's budget clipping needs analytic costs ('params' or 'flops')")
        self.prune_env: PruneEnv = base
        self.bisection_steps = bisection_steps

    def _fits(self, ratios: np.ndarray) -> bool:
        costs = self.prune_env.analytic_costs(ratios)
        return all(costs[k] <= v for k, v in self.prune_env.cost_limits.items())

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

        if self._fits(with_ratio(1.0)):
            return 1.0
        lo, hi = env.min_keep, 1.0
        if self._fits(with_ratio(lo)):
            for _ in range(self.bisection_steps):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if self._fits(with_ratio(mid)) else (lo, mid)
        # else the budget is out of reach: prune as hard as allowed
        return float(env.snap(with_ratio(lo))[t])  # exactly representable as an action

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        clipped = np.minimum(a, self.max_ratio()).astype(np.float32)
        return self.env.step(clipped)
