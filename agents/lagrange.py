"""Lagrange multipliers for constrained RL, one per constraint, each a small stateful module.

- ``GradientLagrange``: projected gradient ascent on lambda (the Lagrangian relaxation of a
  CMDP, Altman 1999; Ray, Achiam, Amodei 2019; OmniSafe's ``Lagrange``), by default
  optimistic steps (Daskalakis et al. 2018; ReLOAD, Moskovitz et al. 2023) without momentum.
- ``PIDLagrange``: the PID controller of Stooke, Achiam, Abbeel 2020 ("Responsive Safety in
  Reinforcement Learning by PID Lagrangian Methods", Algorithm 2): proportional, integral and
  derivative terms on the constraint violation.

Both work on the violation *relative to the limit*, ``e = (J_c - d) / d``, and keep lambda in
units of the limit: the value they expose is ``lambda = lambda_rel / d``, the price in reward of
one unit of cost, while the controller moves ``lambda_rel = lambda * d``, the price of one
budget's worth of cost. Scaling a cost and its limit by any factor therefore leaves the
controller's trajectory unchanged (the exposed lambda scales inversely, as the price of the
cost does; an ``upper_bound`` on lambda is absolute and is the exception), which is what lets
one set of defaults hold for costs that are fractions (pruning, limits ~0.1) and for costs that
are counts (Safety-Gym, limits ~25). Stooke et al. and OmniSafe
use the absolute violation ``J_c - d``, whose gains must be re-tuned per cost scale. A limit of
0 has no relative scale: its violation and lambda are taken in the cost's own units.

The violation is capped at ``max_violation`` (default 1: twice the limit) before either
update: below the limit it cannot fall under -1, so without the cap an episode cost ten limits
over at the start of a search (a tight budget) winds lambda up ten times faster than a
feasible policy unwinds it, and the policy ends far under its budget. With a limit of 0 (no relative
scale) the cap is one unit of the cost itself.

Both are ``nn.Module`` so that their state (and the optimizer's) is saved with the agent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

LAGRANGIANS = ("gradient", "pid")
# The defaults, in one place (PPOLagrangian's arguments read them). The policy integrates the
# Lagrangian's gradient, so an integrator on lambda alone closes a loop of two integrators that
# cycles (plain gradient ascent, optimism 0); what settles it is a term in the violation
# itself, the PID's kp or optimistic ascent's extrapolation, whose proportional gain is
# lr * optimism (0.15, against an integral gain of lr = 0.03; the PID: 0.2 against 0.05).
# Measured on VGG16PruneSurrogate-v0 at budgets 0.1 and 0.3 over ten seeds: docs/convergence.md.
GRADIENT_DEFAULTS: dict[str, Any] = {"lr": 0.03, "optimizer": "SGD", "optimism": 5.0}
# Anti-windup: the violation the multipliers respond to is capped at one budget's worth (a
# cost at twice its limit or more counts as twice). Below the limit it can never fall under
# -1 (a cost is >= 0), so without the cap a tight budget (an episode cost many limits over
# at the start) winds lambda up many times faster than a feasible policy can unwind it.
MAX_VIOLATION = 1.0
PID_DEFAULTS: dict[str, Any] = {"kp": 0.2, "ki": 0.05, "kd": 0.0, "d_delay": 10, "ema_alpha": 0.5}


def _as_vector(values: float | Sequence[float], name: str) -> torch.Tensor:
    vector = torch.as_tensor(
        np.atleast_1d(np.asarray(values, dtype=np.float64)), dtype=torch.float32
    )
    if vector.ndim != 1 or not torch.isfinite(vector).all():
        raise ValueError(f"{name} must be a finite number or a list of them, got {values!r}")
    return vector


class LagrangeMultiplier(nn.Module):
    """Common state: the cost limits, their scales and the multipliers' upper bound."""

    def __init__(
        self,
        cost_limit: float | Sequence[float],
        upper_bound: float | None = None,
        max_violation: float | None = MAX_VIOLATION,
    ):
        super().__init__()
        limits = _as_vector(cost_limit, "cost_limit")
        if (limits < 0).any():
            raise ValueError(f"cost_limit must be >= 0, got {cost_limit!r}")
        if upper_bound is not None and not (math.isfinite(upper_bound) and upper_bound > 0):
            raise ValueError(f"upper_bound must be a positive number or None, got {upper_bound}")
        if max_violation is not None and not (math.isfinite(max_violation) and max_violation > 0):
            raise ValueError(
                f"max_violation must be a positive number or None, got {max_violation}"
            )
        self.register_buffer("cost_limit", limits)
        self.upper_bound = upper_bound
        self.max_violation = max_violation

    @property
    def n_constraints(self) -> int:
        return len(self.cost_limit)

    @property
    def scale(self) -> torch.Tensor:
        """The unit of each constraint's violation: its limit (1 where the limit is 0)."""
        return torch.where(self.cost_limit > 0, self.cost_limit, torch.ones_like(self.cost_limit))

    def set_cost_limit(self, cost_limit: float | Sequence[float], keep: str = "relative") -> None:
        """Change the limits (same number of constraints). ``keep="relative"`` keeps
        lambda_rel = lambda * d (the controller's state: a tighter limit raises lambda);
        ``keep="value"`` keeps lambda itself (for limits learned before any update)."""
        limits = _as_vector(cost_limit, "cost_limit").to(self.cost_limit.device)
        if limits.shape != self.cost_limit.shape:
            raise ValueError(f"expected {self.n_constraints} cost limits, got {limits.tolist()}")
        if (limits < 0).any():
            raise ValueError(f"cost_limit must be >= 0, got {cost_limit!r}")
        if keep not in ("relative", "value"):
            raise ValueError(f"keep must be 'relative' or 'value', got {keep!r}")
        old_scale = self.scale
        self.cost_limit.copy_(limits)
        if keep == "value":
            self._rescale(self.scale / old_scale)

    def _rescale(self, factor: torch.Tensor) -> None:
        """Multiply the relative state by ``factor`` (per constraint)."""
        raise NotImplementedError

    @property
    def value(self) -> np.ndarray:
        """The current multipliers, one per constraint, in reward per unit of cost (>= 0)."""
        return (self.relative_value / self.scale).detach().cpu().numpy().astype(np.float64)

    @property
    def relative_value(self) -> torch.Tensor:
        """The multipliers in reward per budget's worth of cost (``lambda * d``)."""
        raise NotImplementedError

    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        """One update from the mean episode cost of newly finished episodes; returns lambda."""
        raise NotImplementedError

    def _relative_error(self, mean_cost: float | Sequence[float]) -> torch.Tensor:
        cost = _as_vector(mean_cost, "mean_cost").to(self.cost_limit.device)
        if cost.shape != self.cost_limit.shape:
            raise ValueError(f"expected {self.n_constraints} mean costs, got {cost.tolist()}")
        return (cost - self.cost_limit) / self.scale

    def _capped(self, error: torch.Tensor) -> torch.Tensor:
        """The violation the multiplier responds to: ``error`` capped at ``max_violation``."""
        return error if self.max_violation is None else error.clamp(max=self.max_violation)

    def _project(self, relative: torch.Tensor) -> torch.Tensor:
        """Clamp relative multipliers so that the exposed lambda lies in [0, upper_bound]."""
        if self.upper_bound is None:
            return relative.clamp(min=0.0)
        return torch.minimum(relative.clamp(min=0.0), self.upper_bound * self.scale)


class GradientLagrange(LagrangeMultiplier):
    """Projected (optimistic) gradient ascent on the relative violation
    ``e = min((J_c - d) / d, max_violation)``:
    ``lambda_rel <- proj(lambda_rel + lr * (e_t + optimism * (e_t - e_{t-1})))``.

    The ascent direction is the Lagrangian's gradient in lambda; with the default optimizer
    (SGD, no momentum) the step is proportional to the violation. Plain ascent
    (``optimism=0``) cycles on pruning: the policy's parameters integrate the Lagrangian's
    gradient, so lambda and the cost form a loop of two integrators that oscillates (the
    cycling of gradient descent-ascent; Stooke et al. 2020 read it as integral-only control).
    The extrapolation along the violation's last change answers a falling cost at once and
    damps the cycle (the defaults, lr 0.03 and optimism 5, against plain ascent:
    docs/convergence.md).

    Adam (OmniSafe's choice, lr 0.035; OmniSafe's form is ``optimizer="Adam", optimism=0``)
    takes steps of about ``lr`` whatever the violation, with momentum: lambda keeps rising for
    several updates after the cost crossed the limit, and the cost cycles around it.

    Args:
        cost_limit: the limit ``d`` of each constraint.
        init: initial lambda (>= 0, in reward per unit of cost).
        lr: step size on the relative violation (default 0.03: with an episode cost at twice
            the limit, lambda_rel rises by 0.03 per update).
        optimizer: name of a ``torch.optim`` optimizer (default "SGD").
        optimism: weight of the extrapolation of optimistic gradient ascent: the step is
            taken along ``e_t + optimism * (e_t - e_{t-1})`` (default 5; 0: plain gradient
            ascent; 1: optimistic gradient ascent, Daskalakis et al. 2018, the dual update
            of ReLOAD, Moskovitz et al. 2023, for last-iterate convergence in CMDPs). The
            extrapolation telescopes: while the projection never clips, lambda_rel after the
            updates on ``e_0 .. e_t`` is
            ``init * d + lr * sum(e) + lr * optimism * (e_t - e_0)``, an integral plus a
            proportional term measured from the first violation (a clip at 0 breaks the sum).
        upper_bound: largest lambda, or None for no bound.
        max_violation: the largest relative violation the update responds to (default 1.0:
            a cost at twice its limit or more counts as twice; None: no cap), the
            anti-windup of tight budgets (``MAX_VIOLATION``).
    """

    def __init__(
        self,
        cost_limit: float | Sequence[float],
        init: float = 0.0,
        lr: float = GRADIENT_DEFAULTS["lr"],
        optimizer: str = GRADIENT_DEFAULTS["optimizer"],
        optimism: float = GRADIENT_DEFAULTS["optimism"],
        upper_bound: float | None = None,
        max_violation: float | None = MAX_VIOLATION,
    ) -> None:
        super().__init__(cost_limit, upper_bound, max_violation)
        if not (math.isfinite(init) and init >= 0):
            raise ValueError(f"lambda init must be >= 0, got {init}")
        if not (math.isfinite(optimism) and optimism >= 0):
            raise ValueError(f"lambda optimism must be >= 0, got {optimism}")
        self.optimism = float(optimism)
        # the previous update's violation; the first update has none and takes a plain step
        self.register_buffer("last_error", torch.zeros(self.n_constraints))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lambda lr must be > 0, got {lr}")
        if not isinstance(getattr(torch.optim, str(optimizer), None), type):
            raise ValueError(f"unknown optimizer {optimizer!r} (expected a torch.optim class name)")
        self.multiplier = nn.Parameter(self._project(float(init) * self.scale))
        self.optimizer = getattr(torch.optim, optimizer)([self.multiplier], lr=lr)

    @property
    def relative_value(self) -> torch.Tensor:
        return self.multiplier.detach()

    @torch.no_grad()
    def _rescale(self, factor: torch.Tensor) -> None:
        self.multiplier.mul_(factor)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args, **kwargs):
        # a state without these buffers (saved by a version without optimistic ascent): no
        # previous violation recorded, so the next update takes a plain step
        state_dict.setdefault(prefix + "last_error", torch.zeros(self.n_constraints))
        state_dict.setdefault(prefix + "steps", torch.zeros((), dtype=torch.int64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_lr(self, lr: float) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lambda lr must be > 0, got {lr}")
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        error = self._capped(self._relative_error(mean_cost))
        previous = self.last_error if int(self.steps) > 0 else error
        direction = error + self.optimism * (error - previous)
        self.last_error.copy_(error)
        self.steps += 1
        self.optimizer.zero_grad()
        loss = -(self.multiplier * direction).sum()  # ascent on lambda = descent on -L
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.multiplier.copy_(self._project(self.multiplier))
        return self.value


class PIDLagrange(LagrangeMultiplier):
    """PID Lagrangian (Stooke et al. 2020, Algorithm 2) on the relative violation.

    With ``e = min((J_c - d) / d, max_violation)`` at update ``t``:
    ``I <- clamp(I + ki * e, 0, upper_bound * d)``; ``P = kp * EMA(e)``;
    ``D = kd * max(0, EMA(J_c / d) - EMA(J_c / d) d_delay updates ago)``;
    ``lambda_rel = clamp(P + I + D, 0, upper_bound * d)``.

    Departures from the paper and OmniSafe's ``PIDLagrangian``, each to make the defaults hold
    without tuning: the relative violation (their violation has the cost's units); the EMAs
    are bias-corrected as Adam's moments (theirs start at 0, so P and D are too small over the
    first ~1 / (1 - ema_alpha) updates); the derivative's history is seeded with the first
    sample (theirs with zeros, so D jumps at the first updates); the integral is clamped to
    the upper bound too (else it winds up beyond it and lambda sticks at the bound).

    The gains act on a violation measured in limits: ``ki`` is the rise of lambda_rel per
    update for a cost at twice the limit (as ``lr`` of ``GradientLagrange``), ``kp`` the
    immediate response to it, ``kd`` damps a rising cost. The proportional term is what
    settles the loop: the policy follows lambda several updates late, so the integral alone
    overshoots, while ``kp * e`` falls as soon as the cost does. Stooke et al. use kp 0.1-1,
    ki 0.01-0.1 on Safety-Gym's absolute costs; OmniSafe's defaults are kp 0.1, ki 0.01,
    kd 0.01, ema 0.95, which here (relative violation) rise too slowly at a 0.3 budget.

    Args:
        cost_limit: the limit ``d`` of each constraint.
        kp, ki, kd: the gains (defaults 0.2, 0.05, 0.0).
        d_delay: how many updates back the derivative looks (default 10).
        ema_alpha: smoothing of the proportional and derivative inputs (default 0.5; 0: none;
            a rollout's mean cost is already an average of tens of episodes, and smoothing
            delays the proportional response).
        init: initial lambda (>= 0, in reward per unit of cost): the integral starts there.
        upper_bound: largest lambda, or None for no bound.
        max_violation: the largest relative violation the update responds to (default 1.0:
            a cost at twice its limit or more counts as twice; None: no cap), the
            anti-windup of tight budgets (``MAX_VIOLATION``).
    """

    def __init__(
        self,
        cost_limit: float | Sequence[float],
        kp: float = PID_DEFAULTS["kp"],
        ki: float = PID_DEFAULTS["ki"],
        kd: float = PID_DEFAULTS["kd"],
        d_delay: int = PID_DEFAULTS["d_delay"],
        ema_alpha: float = PID_DEFAULTS["ema_alpha"],
        init: float = 0.0,
        upper_bound: float | None = None,
        max_violation: float | None = MAX_VIOLATION,
    ) -> None:
        super().__init__(cost_limit, upper_bound, max_violation)
        for name, gain in (("kp", kp), ("ki", ki), ("kd", kd), ("init", init)):
            if not (math.isfinite(gain) and gain >= 0):
                raise ValueError(f"{name} must be >= 0, got {gain}")
        if int(d_delay) != d_delay or int(d_delay) < 1:
            raise ValueError(f"d_delay must be an integer >= 1, got {d_delay}")
        if not 0 <= ema_alpha < 1:
            raise ValueError(f"ema_alpha must be in [0, 1), got {ema_alpha}")
        self.kp, self.ki, self.kd, self.ema_alpha = kp, ki, kd, ema_alpha
        n = self.n_constraints
        self.register_buffer("integral", self._project(float(init) * self.scale))
        self.register_buffer("error_ema", torch.zeros(n))  # EMA of e, before bias correction
        self.register_buffer("cost_ema", torch.zeros(n))  # EMA of J_c / d, idem
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("history", torch.zeros(int(d_delay), n))  # oldest first
        self.register_buffer("multiplier", self.integral.clone())

    @property
    def d_delay(self) -> int:
        return len(self.history)

    @torch.no_grad()
    def _rescale(self, factor: torch.Tensor) -> None:
        self.integral.mul_(factor)
        self.multiplier.mul_(factor)

    @property
    def relative_value(self) -> torch.Tensor:
        return self.multiplier

    @torch.no_grad()
    def update(self, mean_cost: float | Sequence[float]) -> np.ndarray:
        raw = self._relative_error(mean_cost)
        relative_cost = raw + self.cost_limit / self.scale  # J_c / d, for the derivative
        error = self._capped(raw)
        self.integral.copy_(self._project(self.integral + self.ki * error))
        a = self.ema_alpha
        self.steps += 1
        self.error_ema.mul_(a).add_((1 - a) * error)
        self.cost_ema.mul_(a).add_((1 - a) * relative_cost)
        correction = 1 - a ** int(self.steps)
        proportional = self.error_ema / correction
        smoothed_cost = self.cost_ema / correction
        if int(self.steps) == 1:  # no past yet: the derivative starts at zero, not at J_c / d
            self.history.copy_(smoothed_cost.expand_as(self.history))
        derivative = (smoothed_cost - self.history[0]).clamp(min=0)
        self.multiplier.copy_(
            self._project(self.kp * proportional + self.integral + self.kd * derivative)
        )
        self.history.copy_(torch.cat([self.history[1:], smoothed_cost.unsqueeze(0)]))
        return self.value

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args, **kwargs):
        # A saved history of another length (the agent loaded with a new d_delay): keep its
        # most recent entries, padding the oldest end with its oldest sample.
        key = prefix + "history"
        saved = state_dict.get(key)
        if (
            saved is not None
            and saved.shape[0] != self.d_delay
            and saved.shape[1:] == (self.n_constraints,)
        ):
            pad = saved[:1].expand(max(self.d_delay - len(saved), 0), -1)
            state_dict[key] = torch.cat([pad, saved])[-self.d_delay :].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def make_lagrange(kind: str, cost_limit: float | Sequence[float], **kwargs) -> LagrangeMultiplier:
    """``"gradient"`` or ``"pid"``; keyword arguments go to the class."""
    if kind == "gradient":
        return GradientLagrange(cost_limit, **kwargs)
    if kind == "pid":
        return PIDLagrange(cost_limit, **kwargs)
    raise ValueError(f"unknown lagrangian {kind!r}; expected one of {LAGRANGIANS}")
