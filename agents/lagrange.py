"""Lagrange multipliers for constrained RL, one per constraint, each a small stateful module.

- ``GradientLagrange``: gradient ascent on lambda (Ray et al. 2019, "Benchmarking Safe
  Exploration"; OmniSafe's ``Lagrange``): minimise ``-lambda * (J_c - d)`` with an optimizer,
  then project onto ``[0, upper_bound]``.
- ``PIDLagrange``: the PID controller of Stooke, Achiam, Abbeel 2020 ("Responsive Safety in
  Reinforcement Learning by PID Lagrangian Methods"): proportional, integral and derivative
  terms on the constraint violation, which damps the oscillation of plain gradient ascent.

Both are ``nn.Module`` so that their state (and the optimizer's) is saved with the agent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

LAGRANGIANS = ("gradient", "pid")


def _as_vector(values: float | Sequence[float], name: str) -> torch.Tensor:
    vector = torch.as_tensor(
        np.atleast_1d(np.asarray(values, dtype=np.float64)), dtype=torch.float32
    )
    if vector.ndim != 1 or not torch.isfinite(vector).all():
        raise ValueError(f"{name} must be a finite number or a list of them, got {values!r}")
    return vector


class LagrangeMultiplier(nn.Module):
    """Common state: the cost limits and the multipliers' upper bound."""

    def __init__(self, cost_limit: float | Sequence[float], upper_bound: float | None = None):
        super().__init__()
        limits = _as_vector(cost_limit, "cost_limit")
        if upper_bound is not None and not (math.isfinite(upper_bound) and upper_bound > 0):
            raise ValueError(f"upper_bound must be a positive number or None, got {upper_bound}")
        self.register_buffer("cost_limit", limits)
        self.upper_bound = upper_bound

    @property
    def n_constraints(self) -> int:
        return len(self.cost_limit)

    @property
    def value(self) -> np.ndarray:
        """The current multipliers, one per constraint (always >= 0)."""
        raise NotImplementedError

    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        """One update from the mean episode cost of the last rollout; returns the new values."""
        raise NotImplementedError

    def _check_cost(self, mean_cost: float | Sequence[float]) -> torch.Tensor:
        cost = _as_vector(mean_cost, "mean_cost").to(self.cost_limit.device)
        if cost.shape != self.cost_limit.shape:
            raise ValueError(f"expected {self.n_constraints} mean costs, got {cost.tolist()}")
        return cost

    def _project(self, values: torch.Tensor) -> torch.Tensor:
        return values.clamp(min=0.0, max=self.upper_bound)


class GradientLagrange(LagrangeMultiplier):
    """lambda <- proj_[0, upper](lambda + lr * (J_c - d)) through an optimizer (Adam by default).

    Args:
        cost_limit: the limit ``d`` of each constraint.
        init: initial lambda (>= 0).
        lr: learning rate of lambda's optimizer.
        optimizer: name of a ``torch.optim`` optimizer.
        upper_bound: largest lambda, or None for no bound.
    """

    def __init__(
        self,
        cost_limit: float | Sequence[float],
        init: float = 0.0,
        lr: float = 0.035,
        optimizer: str = "Adam",
        upper_bound: float | None = None,
    ) -> None:
        super().__init__(cost_limit, upper_bound)
        if not (math.isfinite(init) and init >= 0):
            raise ValueError(f"lambda init must be >= 0, got {init}")
        if not lr > 0:
            raise ValueError(f"lambda lr must be > 0, got {lr}")
        if not hasattr(torch.optim, optimizer):
            raise ValueError(f"unknown optimizer {optimizer!r} (expected a torch.optim class name)")
        self.multiplier = nn.Parameter(torch.full((self.n_constraints,), float(init)))
        self.optimizer = getattr(torch.optim, optimizer)([self.multiplier], lr=lr)

    @property
    def value(self) -> np.ndarray:
        return self.multiplier.detach().cpu().numpy().astype(np.float64)

    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        cost = self._check_cost(mean_cost)
        self.optimizer.zero_grad()
        loss = -(self.multiplier * (cost - self.cost_limit)).sum()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.multiplier.copy_(self._project(self.multiplier))
        return self.value


class PIDLagrange(LagrangeMultiplier):
    """PID Lagrangian (Stooke et al. 2020, Algorithm 2).

    ``delta = J_c - d``; ``I <- max(0, I + ki * delta)``; ``P = kp * EMA(delta)``;
    ``D = kd * max(0, EMA(J_c) - EMA(J_c) d_delay updates ago)``; ``lambda = proj(P + I + D)``.

    Args:
        cost_limit: the limit ``d`` of each constraint.
        kp, ki, kd: the gains.
        d_delay: how many updates back the derivative looks.
        ema_alpha: smoothing of the proportional and derivative inputs (0: none).
        init: initial value of the integral term (so lambda starts there).
        upper_bound: largest lambda, or None for no bound.
    """

    def __init__(
        self,
        cost_limit: float | Sequence[float],
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.01,
        d_delay: int = 10,
        ema_alpha: float = 0.95,
        init: float = 0.0,
        upper_bound: float | None = None,
    ) -> None:
        super().__init__(cost_limit, upper_bound)
        for name, gain in (("kp", kp), ("ki", ki), ("kd", kd), ("init", init)):
            if not (math.isfinite(gain) and gain >= 0):
                raise ValueError(f"{name} must be >= 0, got {gain}")
        if int(d_delay) < 1 or not 0 <= ema_alpha < 1:
            raise ValueError("d_delay must be >= 1 and ema_alpha in [0, 1)")
        self.kp, self.ki, self.kd, self.ema_alpha = kp, ki, kd, ema_alpha
        n = self.n_constraints
        self.register_buffer("integral", torch.full((n,), float(init)))
        self.register_buffer("delta_p", torch.zeros(n))
        self.register_buffer("cost_d", torch.zeros(n))
        self.register_buffer("history", torch.zeros(int(d_delay), n))  # oldest first
        self.register_buffer("multiplier", self._project(self.integral.clone()))

    @property
    def value(self) -> np.ndarray:
        return self.multiplier.cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        cost = self._check_cost(mean_cost)
        delta = cost - self.cost_limit
        self.integral.copy_((self.integral + self.ki * delta).clamp(min=0))
        a = self.ema_alpha
        self.delta_p.mul_(a).add_((1 - a) * delta)
        self.cost_d.mul_(a).add_((1 - a) * cost)
        derivative = (self.cost_d - self.history[0]).clamp(min=0)
        self.multiplier.copy_(
            self._project(self.kp * self.delta_p + self.integral + self.kd * derivative)
        )
        self.history.copy_(torch.cat([self.history[1:], self.cost_d.unsqueeze(0)]))
        return self.value


def make_lagrange(kind: str, cost_limit: float | Sequence[float], **kwargs) -> LagrangeMultiplier:
    """``"gradient"`` or ``"pid"``; keyword arguments go to the class."""
    if kind == "gradient":
        return GradientLagrange(cost_limit, **kwargs)
    if kind == "pid":
        return PIDLagrange(cost_limit, **kwargs)
    raise ValueError(f"unknown lagrangian {kind!r}; expected one of {LAGRANGIANS}")
