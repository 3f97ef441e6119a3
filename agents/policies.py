"""Actor-critic policy with a second critic for the cost(s)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from torch import nn


class CostActorCriticPolicy(ActorCriticPolicy):
    """SB3's ``ActorCriticPolicy`` plus a cost critic with ``n_costs`` outputs.

    By default (``cost_critic="separate"``) the cost critic is its own MLP on the value
    features, so the reward and cost value functions do not compete for one representation;
    ``"shared"`` puts a linear cost head on the reward critic's hidden layers instead.

    Args:
        n_costs: number of cost signals (one output each).
        cost_critic: "separate" (default) or "shared".
        cost_net_arch: hidden layer sizes of a separate cost critic (default: the value net's,
            or 64-64).
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
