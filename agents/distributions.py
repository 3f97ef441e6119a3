"""A Beta action distribution for bounded Box actions, in SB3's ``Distribution`` interface."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution, sum_independent_dims
from torch import nn
from torch.nn import functional as F

SelfBeta = TypeVar("SelfBeta", bound="BetaDistribution")

# Samples are kept this far inside (0, 1): a float32 Beta sample can round to exactly 0 or 1,
# where the log-density is infinite.
EPS = 1e-6


class BetaDistribution(Distribution):
    """Independent Beta distributions stretched onto the bounds of a Box action space.

    Chou, Maturana, Scherer 2017 ("Improving Stochastic Policy Gradients in Continuous Control
    with Deep Reinforcement Learning using the Beta Distribution"): a Gaussian clipped to the
    bounds puts probability mass on actions the env cannot take; every sample beyond a bound
    acts like the bound while the policy gradient still pushes on the Gaussian's tail, so
    once the policy sits at a bound its gradient vanishes there. A Beta has its support on
    the bounds exactly: every sample is an action the env takes, and log-probabilities and
    entropy are exact.

    Each action dimension ``i`` is ``low_i + (high_i - low_i) * u_i``, ``u_i ~ Beta(a_i, b_i)``
    with ``a = 1 + softplus(z_a)``, ``b = 1 + softplus(z_b)`` from a linear head (so the density
    is unimodal, never infinite at a bound). ``log_prob`` and ``entropy`` include the Jacobian
    ``-sum log(high - low)`` of the stretch. The deterministic action is the mean
    ``a / (a + b)``, strictly inside the bounds (with a cost linear in the action, the cost of
    the deterministic action is then the mean cost of the sampled ones).

    :param action_dim: number of action dimensions.
    :param low: lower bounds (finite).
    :param high: upper bounds (finite, > low).
    """

    distribution: th.distributions.Beta

    def __init__(self, action_dim: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        low = np.broadcast_to(np.asarray(low, dtype=np.float32), (action_dim,))
        high = np.broadcast_to(np.asarray(high, dtype=np.float32), (action_dim,))
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(
                f"a Beta action distribution needs finite bounds with high > low, got "
                f"low={low.tolist()}, high={high.tolist()}"
            )
        self.action_dim = int(action_dim)
        self.low = th.as_tensor(low.copy())
        self.width = th.as_tensor((high - low).copy())

    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """A linear layer with two outputs per action dimension (the pre-softplus a and b)."""
        return nn.Linear(latent_dim, 2 * self.action_dim)

    def proba_distribution(self: SelfBeta, params: th.Tensor) -> SelfBeta:
        concentration = 1.0 + F.softplus(params)
        a, b = concentration.split(self.action_dim, dim=-1)
        self.distribution = th.distributions.Beta(a, b)
        self.low, self.width = self.low.to(params), self.width.to(params)
        return self

    def _unit(self, actions: th.Tensor) -> th.Tensor:
        return ((actions - self.low) / self.width).clamp(EPS, 1 - EPS)

    def _stretch(self, unit: th.Tensor) -> th.Tensor:
        return self.low + self.width * unit

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        log_density = self.distribution.log_prob(self._unit(actions))
        return sum_independent_dims(log_density) - th.log(self.width).sum()

    def entropy(self) -> th.Tensor:
        return sum_independent_dims(self.distribution.entropy()) + th.log(self.width).sum()

    def sample(self) -> th.Tensor:
        return self._stretch(self.distribution.rsample().clamp(EPS, 1 - EPS))

    def mode(self) -> th.Tensor:
        """The deterministic action: the mean (see the class docstring)."""
        return self._stretch(self.distribution.mean)

    def actions_from_params(self, params: th.Tensor, deterministic: bool = False) -> th.Tensor:
        self.proba_distribution(params)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, params: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        actions = self.actions_from_params(params)
        return actions, self.log_prob(actions)
