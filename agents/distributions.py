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
CONCENTRATIONS = ("softplus", "exp")
# The exp head's output is capped softly at 10 (a + b up to ~4.4e4; trained policies reached
# 2.4e4): past that, float32 Beta log-probabilities lose the precision PPO's ratio needs (their
# error against float64 grows from ~0.01 at z = 10 to ~3 at z = 15). The cap is soft
# (``M - softplus(M - z)``) so that an output beyond it keeps a gradient back.
LOG_CONCENTRATION_MAX = 10.0


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
    with ``a = 1 + g(z_a)``, ``b = 1 + g(z_b)`` from a linear head (so the density is unimodal,
    never infinite at a bound). ``concentration`` chooses ``g``:

    - ``"softplus"`` (this class's default, what agents saved before the option have):
      ``a + b`` grows linearly with the head's output. Adam moves each weight by about its
      learning rate per step, so in a search's few thousand updates the head cannot reach the
      hundreds that a precise keep ratio needs: on ``agents.problems`` at a 0.05 budget the
      trained concentrations stayed at 23-51, the sampled costs spread 12% of the limit
      around their mean, and the deterministic policy sat at 0.87x the limit.
    - ``"exp"`` (what ``PPOLagrangian`` and the registry's agents use,
      ``agents.policies.BETA_CONCENTRATION``): ``g = exp`` (softly capped, see
      ``LOG_CONCENTRATION_MAX``), so a step of the head changes the concentration by
      a factor, whatever its size; the same run reached ``a + b`` of 180-24,000 and 0.99x.
      Equal to softplus where the head's output is very negative (both ~ ``e^z``).

    ``log_prob`` and ``entropy`` include the Jacobian ``-sum log(high - low)`` of the stretch.
    The deterministic action is the mean ``a / (a + b)``, strictly inside the bounds (with a
    cost linear in the action, the cost of the deterministic action is then the mean cost of
    the sampled ones).

    :param action_dim: number of action dimensions.
    :param low: lower bounds (finite).
    :param high: upper bounds (finite, > low).
    :param concentration: "softplus" or "exp" (see above).
    """

    distribution: th.distributions.Beta

    def __init__(
        self, action_dim: int, low: np.ndarray, high: np.ndarray, concentration: str = "softplus"
    ) -> None:
        super().__init__()
        if concentration not in CONCENTRATIONS:
            raise ValueError(
                f"unknown concentration {concentration!r}; expected one of {CONCENTRATIONS}"
            )
        self.concentration = concentration
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
        if self.concentration == "exp":
            capped = LOG_CONCENTRATION_MAX - F.softplus(LOG_CONCENTRATION_MAX - params)
            concentration = 1.0 + th.exp(capped)
        else:
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
