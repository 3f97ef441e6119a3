"""A rollout buffer that also stores costs, cost values, and their GAE advantages and returns."""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.vec_env import VecNormalize

_COST_ARRAYS = ("costs", "cost_values", "cost_advantages", "cost_returns")


class CostRolloutBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    old_cost_values: th.Tensor  # [batch, n_costs]
    cost_advantages: th.Tensor  # [batch, n_costs]
    cost_returns: th.Tensor  # [batch, n_costs]


class CostRolloutBuffer(RolloutBuffer):
    """SB3's ``RolloutBuffer`` plus ``n_costs`` cost signals.

    The cost advantages and returns come from SB3's own GAE (``compute_returns_and_advantage``)
    run once per cost with the cost arrays swapped in, so rewards and costs are estimated by
    exactly the same code. ``cost_gamma`` / ``cost_gae_lambda`` default to the reward's.
    """

    def __init__(
        self,
        *args,
        n_costs: int = 1,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
        **kwargs,
    ) -> None:
        if int(n_costs) < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}")
        self.n_costs = int(n_costs)
        super().__init__(*args, **kwargs)
        self.cost_gamma = self.gamma if cost_gamma is None else cost_gamma
        self.cost_gae_lambda = self.gae_lambda if cost_gae_lambda is None else cost_gae_lambda

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs, self.n_costs)
        for name in _COST_ARRAYS:
            setattr(self, name, np.zeros(shape, dtype=np.float32))
        super().reset()

    def add(self, *args, cost: np.ndarray, cost_value: th.Tensor, **kwargs) -> None:
        """``RolloutBuffer.add`` plus ``cost`` [n_envs, n_costs] and ``cost_value`` (same shape)."""
        self.costs[self.pos] = np.asarray(cost, dtype=np.float32).reshape(self.n_envs, self.n_costs)
        self.cost_values[self.pos] = (
            cost_value.detach().cpu().numpy().reshape(self.n_envs, self.n_costs)
        )
        super().add(*args, **kwargs)

    def compute_returns_and_advantage(  # type: ignore[override]
        self, last_values: th.Tensor, dones: np.ndarray, last_cost_values: th.Tensor | None = None
    ) -> None:
        super().compute_returns_and_advantage(last_values, dones)
        if last_cost_values is None:
            raise ValueError("CostRolloutBuffer needs last_cost_values")
        last_cost_values = last_cost_values.detach().reshape(self.n_envs, self.n_costs)
        # SB3's GAE reads these attributes: swap each cost in, then put the reward's back.
        swapped = ("rewards", "values", "advantages", "returns", "gamma", "gae_lambda")
        saved = {name: getattr(self, name) for name in swapped}
        try:
            self.gamma, self.gae_lambda = self.cost_gamma, self.cost_gae_lambda
            for i in range(self.n_costs):
                self.rewards = np.ascontiguousarray(self.costs[..., i])
                self.values = np.ascontiguousarray(self.cost_values[..., i])
                self.advantages = np.zeros_like(self.rewards)
                super().compute_returns_and_advantage(last_cost_values[:, i], dones)
                self.cost_advantages[..., i] = self.advantages
                self.cost_returns[..., i] = self.returns
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def get(self, batch_size: int | None = None) -> Generator[CostRolloutBufferSamples, None, None]:  # type: ignore[override]
        if not self.generator_ready:
            for name in _COST_ARRAYS:
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> CostRolloutBufferSamples:
        base = super()._get_samples(batch_inds, env)
        extra = (
            self.cost_values[batch_inds],
            self.cost_advantages[batch_inds],
            self.cost_returns[batch_inds],
        )
        return CostRolloutBufferSamples(*base, *map(self.to_torch, extra))
