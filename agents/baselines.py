"""Non-RL searches on the pruning envs, with the same interface and result type as the agents.

- ``RandomSearch``: the best feasible of N random episodes, N = the episodes an RL run with
  the same ``total_timesteps`` would evaluate. Each random ratio vector that breaks an analytic
  budget is scaled down onto the budget boundary first, so no evaluation is wasted on a
  candidate known to be infeasible.

It drives the env through its public API only, with the machinery of the pruning heuristics
(``prune_env.heuristics.SearchBaseline``). ``BASELINES`` names every search the registry
offers: the heuristics ("uniform", "magnitude_global", "tp_global", which live beside the env
in ``prune_env.heuristics`` and are re-exported here) and "random_search".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prune_env.heuristics import (
    HEURISTICS,
    MagnitudeGlobalBaseline,
    SearchBaseline,
    TorchPruningGlobal,
    UniformBaseline,
)

__all__ = [
    "BASELINES",
    "MagnitudeGlobalBaseline",
    "RandomSearch",
    "SearchBaseline",
    "TorchPruningGlobal",
    "UniformBaseline",
]


class RandomSearch(SearchBaseline):
    """Best feasible of N random candidates, N = total_timesteps // steps per episode."""

    name = "random_search"

    def learn(self, total_timesteps: int, callback: Any = None, **_: Any) -> RandomSearch:
        env = self.prune_env
        per_episode = 1 if env.mode == "oneshot" else env.n_layers
        n_episodes = max(1, int(total_timesteps) // per_episode)
        low = env.min_keep
        for _ in range(n_episodes):
            ratios = env.snap(self.rng.uniform(low, 1.0, size=env.n_layers))
            if env.analytic_costs(ratios) is not None and not self._feasible(ratios):
                ratios, _ = self.largest_feasible(
                    lambda t, r=ratios: np.maximum(low, low + t * (r - low))
                )
            self.run_episode(ratios)
        return self


BASELINES: dict[str, type[SearchBaseline]] = {**HEURISTICS, RandomSearch.name: RandomSearch}
