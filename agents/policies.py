"""Actor-critic policies: bounded action distributions, and a second critic for the cost(s)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    SquashedDiagGaussianDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from torch import nn

from agents.distributions import CONCENTRATIONS, BetaDistribution

# "auto": Beta on a Box with finite bounds, SB3's own distribution otherwise.
ACTION_DISTS = ("auto", "beta", "squashed_gaussian", "gaussian")
# The Beta concentration that PPOLagrangian and the registry's on-policy agents are built with
# (written into their policy_kwargs, so that a saved agent loads with its own). The class's
# default stays "softplus": agents saved before the option existed were trained with it.
BETA_CONCENTRATION = "exp"


def with_beta_concentration(policy: Any, policy_kwargs: dict[str, Any] | None) -> dict | None:
    """``policy_kwargs`` with ``BETA_CONCENTRATION`` unless they name one, for a policy class
    that draws from the Beta (any other policy's kwargs are returned as they are). Agents call
    it at construction, not at load: a saved agent's kwargs are restored as saved."""
    if not (isinstance(policy, type) and issubclass(policy, BoundedActorCriticPolicy)):
        return policy_kwargs
    return {"beta_concentration": BETA_CONCENTRATION, **(policy_kwargs or {})}


def _bounded_box(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and bool(np.all(np.isfinite(space.low)))
        and bool(np.all(np.isfinite(space.high)))
    )


class BoundedActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` whose Box actions are drawn from a bounded distribution.

    SB3's Gaussian is clipped to the action bounds in the env step only: the agent learns from
    actions the env never took, and once the policy's mean sits beyond a bound (a layer pruned
    to ``min_keep``) most samples are clipped to the same action, the advantages of the samples
    collapse and the gradient that would bring it back dies. ``action_dist`` chooses:

    - ``"beta"`` (default for a Box with finite bounds): ``agents.distributions.
      BetaDistribution`` on the bounds; exact log-probability and entropy; the deterministic
      action is the mean.
    - ``"squashed_gaussian"``: SB3's tanh-squashed Gaussian (SAC's), rescaled to the bounds;
      exact log-probability (with the tanh Jacobian), entropy estimated by ``-log_prob``.
    - ``"gaussian"``: SB3's Gaussian, clipped in the env step (SB3's PPO as it is).

    ``"auto"`` is "beta" on a bounded Box and SB3's own distribution on any other space.
    ``beta_concentration`` ("softplus", the default, or "exp") is how the Beta's head output
    becomes its concentrations (``agents.distributions.BetaDistribution``; the agents of this
    package are built with ``BETA_CONCENTRATION``). All other arguments as
    ``ActorCriticPolicy``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        *args: Any,
        action_dist: str = "auto",
        beta_concentration: str = "softplus",
        **kwargs: Any,
    ) -> None:
        if beta_concentration not in CONCENTRATIONS:
            raise ValueError(
                f"unknown beta_concentration {beta_concentration!r}; expected one of "
                f"{CONCENTRATIONS}"
            )
        self.beta_concentration = beta_concentration
        if action_dist not in ACTION_DISTS:
            raise ValueError(f"unknown action_dist {action_dist!r}; expected one of {ACTION_DISTS}")
        if action_dist in ("beta", "squashed_gaussian") and not _bounded_box(action_space):
            raise ValueError(
                f"action_dist={action_dist!r} needs a Box action space with finite bounds, "
                f"got {action_space}"
            )
        if kwargs.get("use_sde") and action_dist in ("beta", "squashed_gaussian"):
            raise ValueError(f"action_dist={action_dist!r} cannot be combined with use_sde")
        self.action_dist_name = action_dist
        if action_dist == "auto":
            bounded = _bounded_box(action_space) and not kwargs.get("use_sde")
            self.action_dist_name = "beta" if bounded else "native"
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        dim = int(np.prod(self.action_space.shape))
        if self.action_dist_name == "squashed_gaussian":
            # A Gaussian subclass: SB3 builds its mean head and log_std; actions live in
            # [-1, 1] and SB3's rollout and predict() rescale them to the bounds.
            self.action_dist = SquashedDiagGaussianDistribution(dim)
            self._squash_output = True
        if self.action_dist_name != "beta":
            super()._build(lr_schedule)
            return
        # SB3 builds a Gaussian head first; it is replaced by the Beta's head, and the
        # optimizer made again so that it holds the parameters that are used.
        self.action_dist = DiagGaussianDistribution(dim)
        super()._build(lr_schedule)
        beta = BetaDistribution(
            dim, self.action_space.low, self.action_space.high, self.beta_concentration
        )
        self.action_dist = beta
        del self.log_std
        self.action_net = beta.proba_distribution_net(self.mlp_extractor.latent_dim_pi)
        if self.ortho_init:
            self.action_net.apply(partial(self.init_weights, gain=0.01))
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor):
        if isinstance(self.action_dist, BetaDistribution):
            return self.action_dist.proba_distribution(self.action_net(latent_pi))
        return super()._get_action_dist_from_latent(latent_pi)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        requested = "auto" if self.action_dist_name == "native" else self.action_dist_name
        data.update(action_dist=requested, beta_concentration=self.beta_concentration)
        return data


class CostActorCriticPolicy(BoundedActorCriticPolicy):
    """``BoundedActorCriticPolicy`` plus a cost critic with ``n_costs`` outputs.

    By default (``cost_critic="separate"``) the cost critic is its own MLP on the value
    features, so the reward and cost value functions do not compete for one representation;
    ``"shared"`` puts a linear cost head on the reward critic's hidden layers instead.

    Args:
        n_costs: number of cost signals (one output each).
        cost_critic: "separate" (default) or "shared".
        cost_net_arch: hidden layer sizes of a separate cost critic (default: the value net's,
            or 64-64).
        action_dist: see ``BoundedActorCriticPolicy`` (default "auto": Beta on a bounded Box).
        Everything else as ``ActorCriticPolicy``.
    """

    def __init__(
        self,
        *args,
        n_costs: int = 1,
        cost_critic: str = "separate",
        cost_net_arch: list[int] | None = None,
        **kwargs,
    ):
        if cost_critic not in ("separate", "shared"):
            raise ValueError(f"cost_critic must be 'separate' or 'shared', got {cost_critic!r}")
        self.n_costs = int(n_costs)
        self.cost_critic = cost_critic
        self.cost_net_arch = cost_net_arch
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        super()._build_mlp_extractor()
        if self.cost_critic == "shared":
            # Needs the extractor's latent size, and must exist before the optimizer is made.
            self.cost_net = nn.Linear(self.mlp_extractor.latent_dim_vf, self.n_costs)

    def _build(self, lr_schedule) -> None:
        if self.cost_critic == "shared":
            super()._build(lr_schedule)
            if self.ortho_init:
                self.cost_net.apply(partial(self.init_weights, gain=1.0))
            return
        arch = self.cost_net_arch
        if arch is None:
            vf = self.net_arch.get("vf") if isinstance(self.net_arch, dict) else self.net_arch
            arch = list(vf) if vf else [64, 64]
        layers: list[nn.Module] = []
        last = self.features_dim
        for width in arch:
            layers += [nn.Linear(last, width), self.activation_fn()]
            last = width
        layers.append(nn.Linear(last, self.n_costs))
        # Built before the parent's _build so that the optimizer it creates covers it.
        self.cost_net = nn.Sequential(*layers)
        super()._build(lr_schedule)
        if self.ortho_init:
            self.cost_net[:-1].apply(partial(self.init_weights, gain=np.sqrt(2)))
            self.cost_net[-1].apply(partial(self.init_weights, gain=1.0))

    def predict_cost_values(self, obs: th.Tensor) -> th.Tensor:
        """Cost value estimates, shape [batch, n_costs]."""
        features = BasePolicy.extract_features(self, obs, self.vf_features_extractor)
        if self.cost_critic == "shared":
            return self.cost_net(self.mlp_extractor.forward_critic(features))
        return self.cost_net(features)

    def _get_constructor_parameters(self) -> dict:
        data = super()._get_constructor_parameters()
        data.update(
            n_costs=self.n_costs, cost_critic=self.cost_critic, cost_net_arch=self.cost_net_arch
        )
        return data
